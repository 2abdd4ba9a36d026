-- Portable SQL: runs on SQLite and PostgreSQL alike (explicit ids: only SQLite auto-numbers INTEGER PRIMARY KEY).
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);
INSERT INTO items (id, name) VALUES (1, 'apple');
INSERT INTO items (id, name) VALUES (2, 'pear');
