-- Version 1: the sessions table.
-- {table} is the quoted, schema-qualified table name; {by_user} and {by_expiry} the quoted
-- index names. `key` is the session key (a hash of the session id, never the id; 16 bytes
-- since version 3).
-- `data` is a JSON object of field name -> the field's JSON text *as a JSON string*, so a
-- patch is `(data - removed) || set` on whole fields. Times are milliseconds since the Unix
-- epoch, as cloakroom's Timestamp.
CREATE TABLE {table} (
    key         bytea   PRIMARY KEY,
    "user"      text,
    created_at  bigint  NOT NULL,
    last_seen   bigint  NOT NULL,
    expires_at  bigint  NOT NULL,
    remember    boolean NOT NULL DEFAULT false,
    user_agent  text,
    data        jsonb   NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX {by_user} ON {table} ("user") WHERE "user" IS NOT NULL;
CREATE INDEX {by_expiry} ON {table} (expires_at);
