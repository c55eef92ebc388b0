-- The skus of a committed chunk's valid rows that the object may mention more than once (their
-- mention hash is among the chunk's shared hashes, or the chunk repeats them). Every other sku of
-- `skus` is in that chunk only, so a job's distinct items are the chunks' unshared skus counted, plus the distinct
-- shared ones: settle no longer hashes every sku of the job. NULL on chunks committed before
-- this column (their `skus` are all counted as shared).
ALTER TABLE etl_chunks ADD COLUMN shared_skus text[];

DO $$
BEGIN
    ALTER TABLE etl_chunks ALTER COLUMN shared_skus SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available in this Postgres build: shared_skus keeps pglz';
END
$$;
