-- The event log, version 2: 16-byte session keys, as the session table's version 3. Keys are
-- cut to their first 16 bytes; previous handles go from 43 characters of base64url to 22:
-- the first 21 characters, then the 22nd with its last 4 bits (from the 17th byte) cleared.
UPDATE {events} SET session = substring(session from 1 for 16) WHERE length(session) = 32;
UPDATE {events} SET previous = substr(previous, 1, 21) || substr(
    'AAAAAAAAAAAAAAAAQQQQQQQQQQQQQQQQggggggggggggggggwwwwwwwwwwwwwwww',
    strpos('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_',
           substr(previous, 22, 1)), 1)
WHERE length(previous) = 43;
