//! The home feed: fan-out on read, read-your-writes, stable pages, exactness of the pruned
//! query and of the heads held in each process, and behaviour when the users service is down.

use crate::helpers::*;
use chrono::{DateTime, Duration, TimeZone, Utc};
use reqwest::StatusCode;
use std::time::Instant;
use uuid::Uuid;

#[tokio::test]
async fn two_users_follow_each_other_see_each_other_then_unfollow_and_stop() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    app.post(&alice, "alice 1").await;
    app.post(&bob, "bob 1").await;
    assert_eq!(
        app.walk("/v1/feed", Some(&alice.token), 20).await,
        vec!["alice 1"],
        "only her own posts before following"
    );

    app.follow(&alice, &bob).await;
    app.follow(&bob, &alice).await;
    app.post(&alice, "alice 2").await;
    assert_eq!(
        app.walk("/v1/feed", Some(&alice.token), 20).await,
        vec!["alice 2", "bob 1", "alice 1"]
    );
    assert_eq!(
        app.walk("/v1/feed", Some(&bob.token), 20).await,
        vec!["alice 2", "bob 1", "alice 1"]
    );

    app.unfollow(&alice, &bob).await;
    assert_eq!(
        app.walk("/v1/feed", Some(&alice.token), 20).await,
        vec!["alice 2", "alice 1"]
    );
}

#[tokio::test]
async fn a_new_post_and_a_new_follow_show_in_the_very_next_read_even_with_a_warm_cache() {
    let app = spawn_app().await;
    let (reader, author) = (app.register("reader").await, app.register("author").await);
    app.post(&author, "already there").await;
    // Warm every cache: followees (empty) and authors.
    assert!(
        app.walk("/v1/feed", Some(&reader.token), 20)
            .await
            .is_empty()
    );

    app.follow(&reader, &author).await;
    assert_eq!(
        app.walk("/v1/feed", Some(&reader.token), 20).await,
        vec!["already there"],
        "follow reflected at once"
    );
    app.post(&reader, "my own").await;
    assert_eq!(
        app.walk("/v1/feed", Some(&reader.token), 20).await,
        vec!["my own", "already there"],
        "own post at once"
    );
    app.unfollow(&reader, &author).await;
    assert_eq!(
        app.walk("/v1/feed", Some(&reader.token), 20).await,
        vec!["my own"],
        "unfollow reflected at once"
    );
}

#[tokio::test]
async fn a_follow_that_published_no_version_is_still_seen_by_asking_users() {
    let app = spawn_app().await;
    let (reader, author) = (app.register("reader").await, app.register("author").await);
    app.post(&author, "hello").await;
    assert!(
        app.walk("/v1/feed", Some(&reader.token), 20)
            .await
            .is_empty()
    );
    app.follow(&reader, &author).await;
    // As if Redis had lost the follow's announcement and the key had then expired.
    app.forget_published_graph_version(&reader).await;
    assert_eq!(
        app.walk("/v1/feed", Some(&reader.token), 20).await,
        vec!["hello"]
    );
}

#[tokio::test]
async fn pages_stay_stable_while_new_posts_arrive_between_reads() {
    let app = spawn_app().await;
    let (reader, author) = (app.register("reader").await, app.register("author").await);
    app.follow(&reader, &author).await;
    for i in 0..7 {
        app.post(&author, &format!("old {i}")).await;
    }
    let first = expect_json(
        app.get("/v1/feed?limit=3", Some(&reader.token)).await,
        StatusCode::OK,
    )
    .await;
    let mut seen = texts_of(&first);
    let mut cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let mut round = 0;
    loop {
        app.post(&author, &format!("new {round}")).await;
        round += 1;
        let page = expect_json(
            app.get(
                &format!("/v1/feed?limit=3&cursor={cursor}"),
                Some(&reader.token),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        seen.extend(texts_of(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).rev().map(|i| format!("old {i}")).collect();
    assert_eq!(
        seen, expected,
        "no duplicates, no gaps, no newcomers mid-walk"
    );
}

#[tokio::test]
async fn the_feed_can_leave_replies_out_and_jump_to_a_point_in_time() {
    let app = spawn_app().await;
    let (reader, author) = (app.register("reader").await, app.register("author").await);
    app.follow(&reader, &author).await;
    let root = app.post(&author, "root").await;
    app.reply(&author, &root, "a reply").await;
    let later = app.post(&author, "later").await;
    assert_eq!(
        app.walk("/v1/feed?exclude_replies=true", Some(&reader.token), 20)
            .await,
        vec!["later", "root"]
    );
    let before = later["created_at"].as_str().unwrap();
    let path = format!("/v1/feed?before={}", urlencode(before));
    assert_eq!(
        app.walk(&path, Some(&reader.token), 20).await,
        vec!["a reply", "root"]
    );
}

fn urlencode(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}

#[tokio::test]
async fn feed_queries_are_checked() {
    let app = spawn_app().await;
    let reader = app.register("reader").await;
    let token = Some(reader.token.as_str());
    expect_problem(
        app.get("/v1/feed", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    expect_problem(
        app.get("/v1/feed?limit=101", token).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_problem(
        app.get("/v1/feed?before=yesterday", token).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    expect_problem(
        app.get("/v1/feed?cursor=%2F%2F%2F", token).await,
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
    )
    .await;
    app.post(&reader, "a").await;
    app.post(&reader, "b").await;
    let page = expect_json(app.get("/v1/feed?limit=1", token).await, StatusCode::OK).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let both = app
        .get(
            &format!("/v1/feed?cursor={cursor}&before=2026-01-01T00:00:00Z"),
            token,
        )
        .await;
    expect_problem(
        both,
        StatusCode::UNPROCESSABLE_ENTITY,
        "conflicting_parameters",
    )
    .await;
}

#[tokio::test]
async fn with_the_users_service_down_the_feed_answers_from_the_published_version_its_cache_or_503()
{
    let app = spawn_app().await;
    let (cached, cold, author) = (
        app.register("cached").await,
        app.register("cold").await,
        app.register("author").await,
    );
    app.follow(&cached, &author).await;
    app.follow(&cold, &author).await;
    app.post(&author, "hello").await;
    // Only `cached` reads while the users service is up.
    assert_eq!(
        app.walk("/v1/feed", Some(&cached.token), 20).await,
        vec!["hello"]
    );

    app.users_server.stop(false).await;

    let started = Instant::now();
    let response = app.get("/v1/feed", Some(&cold.token)).await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2500),
        "bounded by the client timeout"
    );
    assert!(response.headers().contains_key("retry-after"));
    expect_problem(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;

    // The version users published still matches the cached list: that list is current, and
    // users need not be asked.
    let response = app.get("/v1/feed", Some(&cached.token)).await;
    assert!(!response.headers().contains_key("x-served-from-cache"));
    assert_eq!(
        texts_of(&expect_json(response, StatusCode::OK).await),
        vec!["hello"]
    );
    // Once the published version is gone, users would have to confirm the list: it is served,
    // marked as possibly stale.
    app.forget_published_graph_version(&cached).await;
    let response = app.get("/v1/feed", Some(&cached.token)).await;
    assert_eq!(response.headers()["x-served-from-cache"], "followees");
    assert_eq!(
        texts_of(&expect_json(response, StatusCode::OK).await),
        vec!["hello"]
    );
}

/// A tiny deterministic generator, so the data set is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// The first seven posts by `followees` before `before`, with whether `reader` likes each, by
/// the plan every feed statement must agree with: read them all and sort.
async fn naive_page(
    pool: &sqlx::PgPool,
    followees: &[Uuid],
    before: (DateTime<Utc>, Uuid),
    exclude_replies: bool,
    reader: Uuid,
) -> Vec<(Uuid, Option<bool>)> {
    sqlx::query_as(
        "SELECT id, EXISTS (SELECT 1 FROM posts.likes l WHERE l.post_id = p.id AND l.user_id = $5)
           FROM posts.posts p WHERE author_id = ANY($1) AND (created_at, id) < ($2, $3)
           AND (NOT $4 OR reply_to IS NULL) ORDER BY created_at DESC, id DESC LIMIT 7",
    )
    .bind(followees)
    .bind(before.0)
    .bind(before.1)
    .bind(exclude_replies)
    .bind(reader)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn both_feed_statements_return_exactly_what_the_naive_query_returns() {
    let app = spawn_app().await;
    let pool = &app.admin_pool;
    let mut rng = Lcg(42);
    let authors: Vec<Uuid> = (0..40).map(|_| Uuid::now_v7()).collect();
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    // Skewed activity: a few prolific authors, many quiet ones, some silent; some replies.
    for (i, author) in authors.iter().enumerate() {
        let count = match i % 5 {
            0 => 60,
            1 => 15,
            2 => 3,
            3 => 1,
            _ => 0,
        };
        for _ in 0..count {
            let at = start + Duration::minutes((rng.next() % (60 * 24 * 90)) as i64);
            let reply = rng.next().is_multiple_of(4);
            let parent: Option<Uuid> = if reply {
                sqlx::query_scalar("SELECT id FROM posts.posts ORDER BY id LIMIT 1")
                    .fetch_optional(pool)
                    .await
                    .unwrap()
            } else {
                None
            };
            sqlx::query("INSERT INTO posts.posts (id, author_id, text, reply_to, created_at) VALUES ($1, $2, 'x', $3, $4)")
                .bind(Uuid::now_v7()).bind(author).bind(parent).bind(at).execute(pool).await.unwrap();
        }
    }
    // Heads as the service maintains them (and one deliberately stale-high, as after a deletion).
    sqlx::query(
        "INSERT INTO posts.author_heads (author_id, last_post_at, last_root_post_at)
         SELECT author_id, max(created_at), max(created_at) FILTER (WHERE reply_to IS NULL) FROM posts.posts GROUP BY author_id",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("UPDATE posts.author_heads SET last_post_at = last_post_at + interval '30 days' WHERE author_id = $1")
        .bind(authors[1]).execute(pool).await.unwrap();
    // An author whose every post was deleted: a head with nothing under it.
    sqlx::query("INSERT INTO posts.author_heads (author_id, last_post_at, last_root_post_at) VALUES ($1, $2, $2)")
        .bind(authors[4]).bind(start + Duration::days(200)).execute(pool).await.unwrap();
    // The reader likes about a third of the posts; the statements say which.
    let reader = Uuid::now_v7();
    sqlx::query("INSERT INTO posts.likes (post_id, user_id) SELECT id, $1 FROM posts.posts WHERE get_byte(uuid_send(id), 15) % 3 = 0")
        .bind(reader).execute(pool).await.unwrap();

    let readers: Vec<Vec<Uuid>> = vec![
        authors.iter().step_by(2).copied().collect(),
        authors.iter().skip(1).step_by(3).copied().collect(),
        authors[2..6].to_vec(),
        authors[3..4].to_vec(),
        vec![],
        // The empty head, and seven authors of one post each: a page of seven is not proven
        // from their heads.
        [4, 3, 8, 13, 18, 23, 28, 33].map(|i| authors[i]).to_vec(),
    ];
    // How often the walk over recent heads answered, and how often it left the page to the
    // fallback: both must happen for the check to mean anything.
    let (mut answered, mut declined) = (0, 0);
    for followees in &readers {
        for exclude_replies in [false, true] {
            let mut before: (DateTime<Utc>, Uuid) = (
                Utc.with_ymd_and_hms(9999, 1, 1, 0, 0, 0).unwrap(),
                Uuid::max(),
            );
            for _page in 0..15 {
                use posts::store::feed;
                let mut conn = pool.acquire().await.unwrap();
                let got = feed::page(
                    &mut conn,
                    followees,
                    None,
                    before,
                    exclude_replies,
                    7,
                    reader,
                )
                .await
                .unwrap();
                let pruned = feed::pruned(pool, followees, before, exclude_replies, 7, reader)
                    .await
                    .unwrap();
                let ids = |rows: &[posts::store::posts::PostRow]| {
                    rows.iter()
                        .map(|p| (p.id, p.liked_by_me))
                        .collect::<Vec<_>>()
                };
                let mut walks = Vec::new();
                for walk in [1, 2, 3, 5, 8, 10, 12, 14, 16, 20, 24, 28, 32, 1000] {
                    match feed::recent(pool, followees, before, exclude_replies, 7, walk, reader)
                        .await
                        .unwrap()
                    {
                        Some(rows) => {
                            answered += 1;
                            walks.push((walk, ids(&rows)));
                        }
                        None => declined += 1,
                    }
                }
                let expected = naive_page(pool, followees, before, exclude_replies, reader).await;
                assert_eq!(ids(&got), expected, "followees {followees:?}");
                assert_eq!(ids(&pruned), expected, "pruned, followees {followees:?}");
                for (walk, rows) in walks {
                    assert_eq!(
                        rows, expected,
                        "recent, walk {walk}, followees {followees:?}"
                    );
                }
                let Some(last) = got.last() else { break };
                before = (last.created_at, last.id);
            }
        }
    }
    assert!(
        answered > 20 && declined > 20,
        "answered {answered}, declined {declined}"
    );

    // The heads a process holds (docs/adr/0028), from one head to all of them: the fewer, the
    // higher the edge, and the more often they cannot tell. They plan pages that start above
    // every followee's head: the first, and some that start at a point in time.
    let mut held = Vec::new();
    for capacity in [1, 2, 3, 5, 8, 13, 21, 30, 1000] {
        let heads = posts::recent_heads::RecentHeads::new(
            capacity,
            std::time::Duration::from_secs(30),
            "t:",
            test_support::redis::unreachable_pool(),
            std::time::Duration::from_millis(50),
            std::sync::Arc::new(common::metrics::Metrics::new().unwrap()),
        );
        heads.load(pool).await.unwrap();
        held.push((capacity, heads));
    }
    let starts = [
        Utc.with_ymd_and_hms(9999, 1, 1, 0, 0, 0).unwrap(),
        start + Duration::days(95),
        start + Duration::days(91),
        start + Duration::days(60),
        start + Duration::days(20),
    ];
    // Plans made, pages they proved, and pages left to the statements because too few posts
    // reached the floor (the stale head).
    let (mut planned, mut proven, mut unproven) = (0, 0, 0);
    for followees in &readers {
        for exclude_replies in [false, true] {
            for at in starts {
                use posts::store::feed;
                let before = (at, Uuid::nil());
                let expected = naive_page(pool, followees, before, exclude_replies, reader).await;
                let ids = |rows: &[posts::store::posts::PostRow]| {
                    rows.iter()
                        .map(|p| (p.id, p.liked_by_me))
                        .collect::<Vec<_>>()
                };
                for (capacity, heads) in &held {
                    let Some(plan) = heads.plan(followees, reader, before, exclude_replies, 7)
                    else {
                        continue;
                    };
                    planned += 1;
                    let what = format!("capacity {capacity}, before {at}, followees {followees:?}");
                    match feed::above_floor(pool, &plan, before, exclude_replies, 7, reader)
                        .await
                        .unwrap()
                    {
                        Some(rows) => {
                            proven += 1;
                            assert_eq!(ids(&rows), expected, "{what}");
                        }
                        None => unproven += 1,
                    }
                    let mut conn = pool.acquire().await.unwrap();
                    let page = feed::page(
                        &mut conn,
                        followees,
                        Some(&plan),
                        before,
                        exclude_replies,
                        7,
                        reader,
                    )
                    .await
                    .unwrap();
                    assert_eq!(ids(&page), expected, "page, {what}");
                }
            }
        }
    }
    assert!(
        proven > 10 && unproven > 0 && planned > proven,
        "planned {planned}, proven {proven}, unproven {unproven}"
    );
}

/// A followee's head is stale (its newest post was deleted). The walk over recent heads must
/// not trust a floor that falls below the heads it did not walk (from a cursor, the probe finds
/// the old post while a followee the walk never reached has a newer one), nor a floor the stale
/// head itself raised (on the first page, where heads stand in for the newest posts).
#[tokio::test]
async fn the_walk_over_recent_heads_declines_when_a_stale_head_misplaces_the_floor() {
    let app = spawn_app().await;
    let pool = &app.admin_pool;
    let t = |minute: i64| {
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + Duration::minutes(minute)
    };
    let (stale, active, quiet, stranger) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let mut ids = std::collections::HashMap::new();
    for (author, minute) in [(stale, 10), (active, 99), (quiet, 50), (stranger, 98)] {
        let id = Uuid::now_v7();
        ids.insert(author, id);
        sqlx::query(
            "INSERT INTO posts.posts (id, author_id, text, created_at) VALUES ($1, $2, 'x', $3)",
        )
        .bind(id)
        .bind(author)
        .bind(t(minute))
        .execute(pool)
        .await
        .unwrap();
    }
    // `stale` posted at minute 100 and deleted it: its head stays there.
    for (author, head) in [(stale, 100), (active, 99), (quiet, 50), (stranger, 98)] {
        sqlx::query("INSERT INTO posts.author_heads (author_id, last_post_at, last_root_post_at) VALUES ($1, $2, $2)")
            .bind(author).bind(t(head)).execute(pool).await.unwrap();
    }
    let followees = [stale, active, quiet];
    let top = (
        Utc.with_ymd_and_hms(9999, 1, 1, 0, 0, 0).unwrap(),
        Uuid::max(),
    );
    let expected = vec![ids[&active], ids[&quiet]];
    use posts::store::feed;
    // From a cursor at `stale`'s head, three heads walked (stale, active, stranger): `stale` is
    // probed, the floor (minute 10) is below the last walked head (minute 98), so `quiet`
    // could still be on the page.
    let cursor = (t(100), Uuid::max());
    let walked = feed::recent(pool, &followees, cursor, false, 2, 3, Uuid::nil())
        .await
        .unwrap();
    assert!(walked.is_none(), "{walked:?}");
    // From the top, the heads set the floor (minute 99, above the last walked head), but only
    // one post reaches it.
    let walked = feed::recent(pool, &followees, top, false, 2, 3, Uuid::nil())
        .await
        .unwrap();
    assert!(walked.is_none(), "{walked:?}");
    let page = feed::page(
        &mut pool.acquire().await.unwrap(),
        &followees,
        None,
        top,
        false,
        2,
        Uuid::nil(),
    )
    .await
    .unwrap();
    assert_eq!(page.iter().map(|p| p.id).collect::<Vec<_>>(), expected);
    // Every head walked, but the first page takes its floor from the heads: `stale`'s head
    // (minute 100) and `active`'s (99) put it at minute 99, where only one post lies. A page
    // short of its limit is not proven: the walk declines and the fallback answers.
    let all = feed::recent(pool, &followees, top, false, 2, 10, Uuid::nil())
        .await
        .unwrap();
    assert!(all.is_none(), "{all:?}");
    // From the cursor, `stale` is probed instead: its real newest post (minute 10) sets the
    // floor, and with every head walked the walk answers.
    let probed = feed::recent(pool, &followees, cursor, false, 2, 10, Uuid::nil())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(probed.iter().map(|p| p.id).collect::<Vec<_>>(), expected);
}

#[tokio::test]
async fn metrics_show_cache_hits_and_calls_to_the_users_service() {
    let app = spawn_app().await;
    let reader = app.register("reader").await;
    app.post(&reader, "hello").await;
    for _ in 0..3 {
        app.walk("/v1/feed", Some(&reader.token), 20).await;
    }
    let text = app.get("/metrics", None).await.text().await.unwrap();
    let value = |series: &str| test_support::metrics::value(&text, series);
    let cache = |name: &str, result: &str| {
        value(&format!(
            r#"cache_requests_total{{cache="{name}",result="{result}"}}"#
        ))
    };
    // Three reads: the first found nothing cached and asked users, the next two used the list
    // under the version that read published; this process held it (ADR 0019).
    let expected = [
        ("followees", "miss", Some(1.0)),
        ("followees", "hit", Some(2.0)),
        ("followee_version", "hit", Some(2.0)),
        ("followees_local", "miss", Some(1.0)),
        ("followees_local", "hit", Some(2.0)),
    ];
    for (name, result, count) in expected {
        assert_eq!(cache(name, result), count, "{name} {result}: {text}");
    }
    // Each of the two read the version once: with the rate-limit count when that went to
    // Redis, else in a round trip of its own, beside the page's statement (ADR 0031).
    let prefetched =
        ["hit", "miss"].map(|result| cache("followee_version_prefetched", result).unwrap_or(0.0));
    assert_eq!(prefetched.iter().sum::<f64>(), 2.0, "{text}");
    assert!(
        value(r#"cache_requests_total{cache="authors",result="hit"}"#)
            .is_some_and(|hits| hits >= 3.0)
    );
    // The author, read once from users, is then held in the process (ADR 0018).
    assert_eq!(
        value(r#"cache_requests_total{cache="authors_local",result="miss"}"#),
        Some(1.0)
    );
    assert!(
        value(r#"cache_requests_total{cache="authors_local",result="hit"}"#)
            .is_some_and(|hits| hits >= 3.0)
    );
    assert_eq!(
        value(
            r#"upstream_request_duration_seconds_count{operation="followee_ids",target="users"}"#
        ),
        Some(1.0),
        "only the first read asks users"
    );
    // Pool waits come from sqlx's acquisition events (the subscriber is process-wide).
    assert!(
        value("db_pool_acquire_seconds_count").is_some_and(|n| n > 0.0),
        "{text}"
    );
}
