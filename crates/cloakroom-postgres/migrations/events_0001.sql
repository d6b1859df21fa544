-- The event log, version 1 (created only for a store opened with `events=N`; its version is
-- recorded under `<table>_events`). {events} is the quoted, schema-qualified `<table>_events`,
-- {events_state} `<table>_events_state`.
--
-- `seq` is taken from `events_state.n` (`UPDATE ... SET n = n + k RETURNING n`) in the same
-- statement or transaction as the change: the row lock on `n` is held until the commit, so
-- the next logged change gets its numbers only after this one committed, and numbers follow
-- commit order (a `bigserial` would hand them out at insert, and a reader could pass a lower
-- one that commits later). `trimmed` is the highest `seq` the purge deleted: a read from
-- below it reports a gap. `keep` is the retention (the last opener's `events=N`).
CREATE TABLE {events} (
    seq         bigint  PRIMARY KEY,
    at          bigint  NOT NULL,
    kind        text    NOT NULL,
    session     bytea   NOT NULL,
    previous    text,
    "user"      text
);
CREATE TABLE {events_state} (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    n           bigint  NOT NULL DEFAULT 0,
    trimmed     bigint  NOT NULL DEFAULT 0,
    keep        bigint  NOT NULL
);
