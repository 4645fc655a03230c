\timing on
SET maintenance_work_mem = '512MB';
TRUNCATE posts.posts CASCADE; TRUNCATE posts.author_heads;
-- 5M posts over a year, by 100k authors with a skewed (power-law) posting rate, stored in time order.
INSERT INTO posts.posts (id, author_id, text, created_at)
SELECT gen_random_uuid(), md5(a::text)::uuid, 'post number ' || n, t
FROM (
  SELECT n, floor(100000 * power(random(), 3))::int AS a, now() - random() * interval '365 days' AS t
  FROM generate_series(1, 5000000) n
) s
ORDER BY t;
INSERT INTO posts.author_heads (author_id, last_post_at, last_root_post_at)
SELECT author_id, max(created_at), max(created_at) FROM posts.posts GROUP BY author_id;
VACUUM ANALYZE posts.posts; ANALYZE posts.author_heads;
-- Readers: followees drawn with a power-law in-degree (popular authors are followed more).
DROP TABLE IF EXISTS public.readers;
CREATE TABLE public.readers (size int, followees uuid[]);
INSERT INTO public.readers
SELECT size, (SELECT array_agg(DISTINCT md5(floor(100000 * power(random(), 2))::int::text)::uuid)
              FROM generate_series(1, size * 12 / 10) WHERE size > 0 AND g > 0)[1:size]
FROM (VALUES (100), (1000), (5000)) v(size), generate_series(1, 3) g;
SELECT size, array_length(followees, 1) FROM public.readers;
