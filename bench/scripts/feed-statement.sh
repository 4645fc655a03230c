#!/usr/bin/env bash
# Usage: bench/scripts/feed-statement.sh  (after bench/scripts/feed-dataset.sql has filled the
# database named by $BENCH_DB, default feedbench, migrated with `DATABASE_NAME=feedbench dbctl setup`).
set -euo pipefail
cd "$(dirname "$0")/../.."
db="${BENCH_DB:-feedbench}"
stmt=$(python3 - <<'PY'
import re
src = open("services/posts/src/store/feed.rs").read()
sql = src[src.index('r#"') + 3:src.index('"#,')]
sql = re.sub(r'AS "([a-z_]+)!"', r'AS \1', sql)
for n, name in [("$1", "a"), ("$2", "b"), ("$3", "c"), ("$4", "d"), ("$5", "e")]:
    sql = sql.replace(n, name)
print(sql)
PY
)
psql -h 127.0.0.1 -U postgres "$db" -q <<SQL
CREATE OR REPLACE FUNCTION public.bench_feed(a uuid[], b timestamptz, c uuid, d bool, e bigint)
RETURNS SETOF uuid LANGUAGE plpgsql AS \$f\$ BEGIN RETURN QUERY SELECT x.id FROM ($stmt) x; END \$f\$;
CREATE OR REPLACE FUNCTION public.bench_naive(a uuid[], b timestamptz, c uuid, d bool, e bigint)
RETURNS SETOF uuid LANGUAGE plpgsql AS \$f\$ BEGIN RETURN QUERY SELECT p.id FROM posts.posts p
WHERE p.author_id = ANY(a) AND (p.created_at, p.id) < (b, c) AND (NOT d OR p.reply_to IS NULL)
ORDER BY p.created_at DESC, p.id DESC LIMIT e; END \$f\$;
SQL
# Median and max of 36 executions (3 readers x 12, so the plan cache reaches its generic-plan
# decision) of the feed statement, run as a cached plan in PL/pgSQL like a driver's prepared
# statement: first page, and a page starting 30 days back.
for size in 100 1000 5000; do
  for fn in bench_feed bench_naive; do
    for back in 0 30; do
      psql -h 127.0.0.1 -U postgres "$db" -Atq <<SQL
CREATE TEMP TABLE t(ms float8);
DO \$\$
DECLARE s timestamptz; i int; r record; before timestamptz; n int;
BEGIN
  before := CASE WHEN $back = 0 THEN 'infinity'::timestamptz ELSE now() - make_interval(days => $back) END;
  FOR r IN SELECT followees FROM public.readers WHERE size = $size LOOP
    FOR i IN 1..12 LOOP
      s := clock_timestamp();
      SELECT count(*) INTO n FROM public.$fn(r.followees, before, 'ffffffff-ffff-ffff-ffff-ffffffffffff', false, 21);
      INSERT INTO t VALUES (extract(epoch FROM clock_timestamp() - s) * 1000);
    END LOOP;
  END LOOP;
END \$\$;
SELECT format('%s followees  %-11s %2s days back: p50 %s ms  max %s ms', $size, '$fn', $back,
  round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3), round(max(ms)::numeric, 3)) FROM t;
SQL
    done
  done
done
