CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);
INSERT INTO items (name) VALUES ('apple');
INSERT INTO items (name) VALUES ('pear');
