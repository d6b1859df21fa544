-- Version 3: session keys are 16 bytes (the first 16 bytes of the SHA-256 of the id, where
-- versions 1 and 2 kept all 32). Keys are cut to their first 16 bytes, so the sessions stay
-- valid: the new key of a ticket is a prefix of its old one. A record holding a sealed value
-- (`~` starts it, and never a JSON text) is deleted instead: its values were sealed with the
-- old key as associated data and would not open under the new one (that session ends; its
-- user signs in again). A rotation's forward converts but is no longer found (its key is
-- derived from the key it forwards); it expires with its grace.
DELETE FROM {table} AS s WHERE length(s.key) = 32 AND (
    s.user_agent LIKE '~%'
    OR EXISTS (SELECT 1 FROM jsonb_each_text(s.data) AS f WHERE f.value LIKE '~%'));
UPDATE {table} SET key = substring(key from 1 for 16) WHERE length(key) = 32;
UPDATE {challenges} SET session = substring(session from 1 for 16) WHERE length(session) = 32;
