-- Which engine each terminal's container lives on, now that a server drives several.
ALTER TABLE terminals ADD COLUMN engine TEXT NOT NULL DEFAULT 'native';
