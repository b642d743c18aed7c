-- Callback in queue (README "Callback in queue"): the per-queue settings, and the history of
-- every callback (one row each, with its final outcome) and of every call to the customer.

ALTER TABLE queues
    -- The DTMF key a waiting caller presses to hang up and be called back; NULL: no callbacks.
    ADD COLUMN callback_key text
        CONSTRAINT queues_callback_key CHECK (callback_key ~ '^[0-9*#]$'),
    ADD COLUMN callback_announce boolean NOT NULL DEFAULT true,
    ADD COLUMN callback_max_attempts int NOT NULL DEFAULT 3
        CONSTRAINT queues_callback_max_attempts CHECK (callback_max_attempts BETWEEN 1 AND 10),
    ADD COLUMN callback_retry_seconds int NOT NULL DEFAULT 300
        CONSTRAINT queues_callback_retry_seconds CHECK (callback_retry_seconds BETWEEN 1 AND 86400),
    ADD COLUMN callback_ring_seconds int NOT NULL DEFAULT 30
        CONSTRAINT queues_callback_ring_seconds CHECK (callback_ring_seconds BETWEEN 5 AND 300),
    ADD COLUMN callback_freeswitch_endpoint text NOT NULL DEFAULT 'sofia/gateway/pstn/{number}'
        CONSTRAINT queues_callback_freeswitch_endpoint
        CHECK (callback_freeswitch_endpoint ~ '^[^\s,|{}''"]*\{number\}[^\s,|{}''"]*$'),
    ADD COLUMN callback_asterisk_endpoint text NOT NULL DEFAULT 'PJSIP/{number}@pstn'
        CONSTRAINT queues_callback_asterisk_endpoint
        CHECK (callback_asterisk_endpoint ~ '^[^\s,|{}''"]*\{number\}[^\s,|{}''"]*$'),
    ADD CONSTRAINT queues_callback_key_not_exit_key
        CHECK (callback_key IS NULL OR exit_key IS NULL OR callback_key <> exit_key);

-- One callback: asked for by the caller of call_id (the queue entry's id).
CREATE TABLE callbacks (
    call_id       text PRIMARY KEY,
    queue         text NOT NULL,
    number        text NOT NULL,
    requested_at  timestamptz NOT NULL,
    status        text NOT NULL DEFAULT 'waiting'
                  CONSTRAINT callbacks_status CHECK (status IN ('waiting', 'answered', 'failed')),
    attempts      int NOT NULL DEFAULT 0,
    agent         text,  -- the agent of the last attempt
    answered_call_id text,  -- the customer's channel when they answered (its CDR)
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX callbacks_queue ON callbacks (queue, requested_at DESC);
CREATE INDEX callbacks_waiting ON callbacks (requested_at) WHERE status = 'waiting';

-- One call to the customer of a callback.
CREATE TABLE callback_attempts (
    call_id     text NOT NULL REFERENCES callbacks (call_id) ON DELETE CASCADE,
    attempt     int NOT NULL CONSTRAINT callback_attempts_attempt CHECK (attempt >= 1),
    agent       text NOT NULL DEFAULT '',
    worker      text NOT NULL DEFAULT '',
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    outcome     text CONSTRAINT callback_attempts_outcome
                CHECK (outcome IN ('answered', 'busy', 'no_answer', 'failed')),
    cause       text NOT NULL DEFAULT '',
    PRIMARY KEY (call_id, attempt)
);
