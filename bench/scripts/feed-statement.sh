#!/usr/bin/env bash
# Usage: bench/scripts/feed-statement.sh
# Times the feed's statements inside PostgreSQL, as cached plans with binary parameters (what the
# service sends), against the database named by $BENCH_DB:
# - `bench` (the default): seeded by `loadgen seed`; the readers are the manifest's (three of
#   each size), read from bench/work/manifest.json;
# - or a database filled by bench/scripts/feed-dataset.sql, which brings its own readers.
# Unlike bench/run's pgbench floors it has no limit on the array's size and does not pay for
# parsing the array as text.
set -euo pipefail
cd "$(dirname "$0")/../.."
db="${BENCH_DB:-bench}"
psql=(psql -h 127.0.0.1 -U postgres "$db" -v ON_ERROR_STOP=1)
# Both statements of store/feed.rs, with their parameters renamed for PL/pgSQL (in the order of
# their binds; the reader's likes come last).
functions=$(python3 - <<'PY'
import re
src = open("services/posts/src/store/feed.rs").read()
params = {
    "recent": ["a", "b", "c", "d", "e", "f", "g"],
    "pruned": ["a", "b", "c", "d", "e", "g"],
}
types = {"a": "uuid[]", "b": "timestamptz", "c": "uuid", "d": "bool", "e": "bigint", "f": "bigint", "g": "uuid"}
for name, names in params.items():
    body = src[src.index(f"pub async fn {name}("):]
    sql = body[body.index('r#"') + 3:body.index('"#,')]
    sql = re.sub(r'AS "([a-z_]+)[!?]"', r'AS \1', sql)
    for n, var in reversed(list(enumerate(names, start=1))):
        sql = sql.replace(f"${n}", f"{var}_")
    args = ", ".join(f"{v}_ {types[v]}" for v in names)
    print(f"CREATE OR REPLACE FUNCTION public.bench_{name}({args}) RETURNS SETOF uuid\n"
          f"LANGUAGE plpgsql AS $f$ BEGIN RETURN QUERY SELECT x.id FROM ({sql}) x; END $f$;")
PY
)
"${psql[@]}" -q <<SQL
$functions
-- What store::feed::page does: the walk for this many authors, then the fallback if it declines.
CREATE OR REPLACE FUNCTION public.bench_feed(a uuid[], b timestamptz, c uuid, d bool, e bigint)
RETURNS SETOF uuid LANGUAGE plpgsql AS \$f\$
BEGIN
  RETURN QUERY SELECT * FROM public.bench_recent(a, b, c, d, e,
    LEAST(GREATEST(100000 / GREATEST(cardinality(a), 1), 300), 2000), '00000000-0000-0000-0000-000000000000');
  IF NOT FOUND THEN
    RETURN QUERY SELECT * FROM public.bench_pruned(a, b, c, d, e, '00000000-0000-0000-0000-000000000000');
  END IF;
END \$f\$;
CREATE OR REPLACE FUNCTION public.bench_naive(a uuid[], b timestamptz, c uuid, d bool, e bigint)
RETURNS SETOF uuid LANGUAGE plpgsql AS \$f\$ BEGIN RETURN QUERY SELECT p.id FROM posts.posts p
WHERE p.author_id = ANY(a) AND (p.created_at, p.id) < (b, c) AND (NOT d OR p.reply_to IS NULL)
ORDER BY p.created_at DESC, p.id DESC LIMIT e; END \$f\$;
SQL
if [ "$db" = bench ]; then
  readers=$(python3 -c "
import json
m = json.load(open('bench/work/manifest.json'))['readers']
print(','.join(f\"({size}, '{r}'::uuid)\" for size in ('100', '1000', '5000') for r in m[size][:3]))")
  "${psql[@]}" -q <<SQL
DROP TABLE IF EXISTS public.readers;
CREATE TABLE public.readers AS
SELECT r.size, array_agg(f.followee_id) AS followees
FROM (VALUES $readers) AS r(size, id) JOIN users.follows f ON f.follower_id = r.id
GROUP BY r.size, r.id;
SQL
fi
# Median and max of 36 executions (3 readers x 12, so the plan cache reaches its generic-plan
# decision): first page, and a page starting 30 days back. The naive plan only at 100 followees:
# at 1,000 and more it takes seconds per execution.
for size in 100 1000 5000; do
  for fn in bench_feed bench_naive; do
    [ "$fn" = bench_naive ] && [ "$size" != 100 ] && continue
    for back in 0 30; do
      "${psql[@]}" -Atq <<SQL
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
