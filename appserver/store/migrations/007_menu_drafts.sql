-- 007_menu_drafts: menu drafts edited in the admin UI, and every menu set published from it.
--
-- A draft is one menu as PUT /api/menus/{name} takes it (JSON), or NULL for "delete this
-- menu". Callers never hear drafts: the menu set is compiled from ivr_menus and
-- ivr_menu_options only. Publishing writes the drafts into those tables (the same path as a
-- SQL edit: NOTIFY, compile, new Redis version) and records the whole set in menu_versions.

-- Every save of a draft takes a new number from here, so a revision is never reused (a
-- draft discarded and started again cannot match a stale editor's revision).
CREATE SEQUENCE menu_draft_revisions;

CREATE TABLE menu_drafts (
    name        text PRIMARY KEY CONSTRAINT menu_drafts_name_slug CHECK (callyard_is_slug(name)),
    menu        jsonb CONSTRAINT menu_drafts_menu_object
                CHECK (menu IS NULL OR jsonb_typeof(menu) = 'object'),  -- NULL: delete it
    revision    bigint NOT NULL DEFAULT nextval('menu_draft_revisions'),
    -- Digest of the live menu (with its options) the draft was started from (NULL: a new
    -- menu); publishing refuses a draft whose live menu changed since (a SQL or REST edit).
    base        text CONSTRAINT menu_drafts_base_digest CHECK (base ~ '^[0-9a-f]{64}$'),
    updated_by  text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE menu_versions (
    id           serial PRIMARY KEY,
    published_at timestamptz NOT NULL DEFAULT now(),
    published_by text NOT NULL,   -- agent username or 'key:<name>'
    action       text NOT NULL CONSTRAINT menu_versions_action CHECK (action IN ('publish', 'rollback')),
    rollback_of  int REFERENCES menu_versions (id),  -- the version a rollback restored
    note         text NOT NULL DEFAULT '' CONSTRAINT menu_versions_note_length CHECK (length(note) <= 1000),
    menus        jsonb NOT NULL,  -- {name: menu}: the whole menu set once published
    changes      jsonb NOT NULL   -- what changed from the set live just before (see the API)
);
CREATE INDEX menu_versions_published_at ON menu_versions (published_at);
