ALTER TABLE items ADD COLUMN price_cents INTEGER NOT NULL DEFAULT 0;
UPDATE items SET price_cents = 120 WHERE name = 'apple';
UPDATE items SET price_cents = 90 WHERE name = 'pear';
