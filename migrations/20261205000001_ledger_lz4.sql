-- The chunk ledger's arrays (each chunk's skus, written skus, mention hashes: tens of kilobytes a
-- chunk) are stored out of line and compressed. pglz, Postgres' default, showed in Postgres' profile
-- of `make bench`; lz4 compresses several times faster at a similar ratio. A server built without
-- lz4 keeps pglz: the columns work the same either way.
DO $$
BEGIN
    ALTER TABLE etl_chunks
        ALTER COLUMN skus SET COMPRESSION lz4,
        ALTER COLUMN invalid_skus SET COMPRESSION lz4,
        ALTER COLUMN written_skus SET COMPRESSION lz4,
        ALTER COLUMN relisted_skus SET COMPRESSION lz4,
        ALTER COLUMN mention_hashes SET COMPRESSION lz4,
        ALTER COLUMN shared_hashes SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available in this Postgres build: the ledger keeps pglz';
END
$$;
