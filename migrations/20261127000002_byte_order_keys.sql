-- Source names and SKUs are identifiers: byte order is the order they need (and the order the
-- database's C.UTF-8 collation gives them anyway), and with COLLATE "C" Postgres compares them
-- with memcmp and abbreviated sort keys instead of calling strcoll. The catalog upsert's index
-- lookups and sorts are mostly such comparisons: on 194,201 rows the upsert into catalog_items
-- took 3.1 s / 2.6 s with "C" keys against 4.6 s / 3.2 s with the default collation.
-- Changing only the collation keeps the table as it is and rebuilds the indexes.
ALTER TABLE catalog_items
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN sku TYPE text COLLATE "C";
ALTER TABLE catalog_item_jobs
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN sku TYPE text COLLATE "C";
