-- Version 2: single-use challenges (DBSC). {challenges} is the quoted, schema-qualified
-- `<table>_dbsc`. `session` is the session key the challenge was issued for; a challenge is
-- taken with `DELETE ... RETURNING`, so of concurrent takes only one gets the row.
CREATE TABLE {challenges} (
    challenge   text    PRIMARY KEY,
    session     bytea   NOT NULL,
    expires_at  bigint  NOT NULL
);
