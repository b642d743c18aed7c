-- API keys for automation. Only a SHA-256 digest of the secret part is stored; the key
-- itself ("cyk_<id>_<secret>") is shown once, when it is created.
CREATE TABLE api_keys (
    id           serial PRIMARY KEY,
    name         text NOT NULL UNIQUE CONSTRAINT api_keys_name_slug CHECK (callyard_is_slug(name)),
    secret_sha256 text NOT NULL CONSTRAINT api_keys_secret_sha256 CHECK (secret_sha256 ~ '^[0-9a-f]{64}$'),
    role         text NOT NULL DEFAULT 'admin'
                 CONSTRAINT api_keys_role CHECK (role IN ('supervisor', 'admin')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
