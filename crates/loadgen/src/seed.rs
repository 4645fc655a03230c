//! The synthetic network: users with a power-law follow graph (so a reader with 1,000
//! followees follows 0.5 % of the authors), posts with Zipf-skewed posting rates spread over a
//! year and stored in time order, dedicated readers with exactly 100, 1,000 and 5,000
//! followees, and direct conversations with messages. Everything derives from one seed.
//!
//! Each schema is written with COPY over a connection of that service's own role: the
//! benchmark takes no cross-schema shortcut either.

use crate::zipf::Zipf;
use anyhow::Context;
use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::str::FromStr;
use uuid::Uuid;

/// How big a network to build.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub users: usize,
    pub posts: usize,
    pub readers_per_size: usize,
    pub conversations: usize,
    pub messages_per_conversation: usize,
}

impl Size {
    /// The benchmark's network.
    pub const FULL: Size = Size {
        users: 200_000,
        posts: 5_000_000,
        readers_per_size: 100,
        conversations: 20_000,
        messages_per_conversation: 10,
    };
    /// A small one for tests and smoke runs.
    pub const SMALL: Size = Size {
        users: 20_000,
        posts: 200_000,
        readers_per_size: 5,
        conversations: 500,
        messages_per_conversation: 10,
    };
}

/// Reader followee counts.
pub const READER_SIZES: [usize; 3] = [100, 1000, 5000];

/// What the load driver needs to know about the network.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Manifest {
    pub readers: std::collections::BTreeMap<String, Vec<Uuid>>,
    pub authors: Vec<Uuid>,
    pub posts: Vec<Uuid>,
    pub conversations: Vec<(Uuid, Uuid, Uuid)>,
}

impl Manifest {
    /// The manifest `loadgen seed` wrote into `work_dir`.
    pub fn load(work_dir: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        let bytes = std::fs::read(format!("{work_dir}/manifest.json"))
            .context("run `loadgen seed` first")?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// The password of every synthetic account. One argon2id hash is computed and shared: hashing
/// 200,000 passwords would take an hour and measure nothing.
pub const PASSWORD: &str = "benchmark-password";

fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .unwrap_or_else(Utc::now)
}

/// A UUIDv7 carrying `at`, with random bits from `rng`: ids sort like their times.
fn v7(at: DateTime<Utc>, rng: &mut impl Rng) -> Uuid {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let random: [u8; 10] = rng.random();
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

async fn connect(host: &str, database: &str, service: &str) -> anyhow::Result<PgConnection> {
    let url = format!("postgres://{service}_svc:{service}_dev_password@{host}/{database}");
    PgConnectOptions::from_str(&url)?
        .connect()
        .await
        .with_context(|| format!("connecting as {service}_svc"))
}

/// Streams `rows` (already in COPY text format) into `statement`, in chunks.
async fn copy(
    conn: &mut PgConnection,
    statement: &str,
    rows: impl Iterator<Item = String>,
) -> anyhow::Result<u64> {
    let mut sink = conn.copy_in_raw(statement).await?;
    let mut buffer = String::with_capacity(1 << 20);
    for row in rows {
        buffer.push_str(&row);
        if buffer.len() > (1 << 20) - 4096 {
            sink.send(std::mem::take(&mut buffer).into_bytes()).await?;
            buffer.reserve(1 << 20);
        }
    }
    if !buffer.is_empty() {
        sink.send(buffer.into_bytes()).await?;
    }
    Ok(sink.finish().await?)
}

fn null_or(id: Option<Uuid>) -> String {
    id.map_or_else(|| "\\N".to_owned(), |id| id.to_string())
}

/// Distinct accounts drawn by popularity, excluding `me`.
fn draw_followees(rng: &mut StdRng, popularity: &Zipf, me: usize, count: usize) -> Vec<usize> {
    let mut chosen = HashSet::with_capacity(count);
    while chosen.len() < count {
        let rank = popularity.sample(rng);
        if rank != me {
            chosen.insert(rank);
        }
    }
    chosen.into_iter().collect()
}

/// Builds the network into `database` (bootstrapped and migrated beforehand, empty or not:
/// it is emptied first).
pub async fn seed(
    host: &str,
    database: &str,
    size: Size,
    seed: u64,
    work_dir: &str,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let year = Duration::days(365);
    let regular = size.users;
    let readers = size.readers_per_size * READER_SIZES.len();
    let total = regular + readers;

    // Accounts: regular users ranked by popularity (rank 0 is the most followed and, below,
    // the most prolific), then the readers.
    let created: Vec<DateTime<Utc>> = (0..total)
        .map(|_| epoch() - year - Duration::seconds(rng.random_range(0..86_400 * 365)))
        .collect();
    let ids: Vec<Uuid> = created.iter().map(|at| v7(*at, &mut rng)).collect();

    // The follow graph: out-degrees from a Pareto tail (most follow a few dozen, some
    // thousands), targets by popularity (Zipf in-degree).
    let popularity = Zipf::new(regular, 1.0);
    let mut follows: Vec<(usize, usize)> = Vec::new();
    for user in 0..regular {
        let u: f64 = rng.random_range(0.0001..1.0);
        let out = ((8.0 / u.powf(0.7)) as usize).min(2000);
        for target in draw_followees(&mut rng, &popularity, user, out) {
            follows.push((user, target));
        }
    }
    let mut reader_ids = std::collections::BTreeMap::new();
    for (s, followees) in READER_SIZES.iter().enumerate() {
        let mut list = Vec::new();
        for k in 0..size.readers_per_size {
            let reader = regular + s * size.readers_per_size + k;
            for target in draw_followees(&mut rng, &popularity, reader, *followees) {
                follows.push((reader, target));
            }
            list.push(ids[reader]);
        }
        reader_ids.insert(followees.to_string(), list);
    }
    let mut followers = vec![0i64; total];
    let mut following = vec![0i64; total];
    for (a, b) in &follows {
        following[*a] += 1;
        followers[*b] += 1;
    }
    eprintln!(
        "[{:?}] graph: {total} accounts, {} follows",
        started.elapsed(),
        follows.len()
    );

    let password_hash = {
        use argon2::PasswordHasher;
        argon2::Argon2::default()
            .hash_password(PASSWORD.as_bytes())
            .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
            .to_string()
    };
    let mut users = connect(host, database, "users").await?;
    sqlx::raw_sql("TRUNCATE users.follows, users.blocks, users.refresh_tokens, users.accounts")
        .execute(&mut users)
        .await?;
    let accounts = (0..total).map(|i| {
        let name = if i < regular {
            format!("user{i}")
        } else {
            format!("reader{}", i - regular)
        };
        format!(
            "{}\t{name}\t{name}@bench.example\t{password_hash}\t{name}\t\tuser\t{}\t{}\t{}\t{}\n",
            ids[i],
            followers[i],
            following[i],
            created[i].to_rfc3339(),
            created[i].to_rfc3339()
        )
    });
    copy(
        &mut users,
        "COPY users.accounts (id, username, email, password_hash, display_name, bio, role, followers_count, following_count, created_at, updated_at) FROM STDIN",
        accounts,
    )
    .await?;
    let follow_rows = follows.iter().map(|(a, b)| {
        format!(
            "{}\t{}\t{}\n",
            ids[*a],
            ids[*b],
            (epoch() - year).to_rfc3339()
        )
    });
    copy(
        &mut users,
        "COPY users.follows (follower_id, followee_id, created_at) FROM STDIN",
        follow_rows,
    )
    .await?;
    sqlx::raw_sql("ANALYZE users.accounts; ANALYZE users.follows")
        .execute(&mut users)
        .await?;
    eprintln!("[{:?}] users schema written", started.elapsed());

    // Posts: authors by a Zipf posting rate over the same ranking, times uniform over the
    // year before the epoch, stored in time order; one in ten is a reply to an earlier post.
    let rate = Zipf::new(regular, 0.8);
    let mut times: Vec<(i64, usize)> = (0..size.posts)
        .map(|_| (rng.random_range(0..86_400_000 * 365), rate.sample(&mut rng)))
        .collect();
    times.sort_unstable();
    let mut post_ids: Vec<Uuid> = Vec::with_capacity(size.posts);
    let mut rows = Vec::with_capacity(size.posts);
    for (offset, author) in &times {
        let at = epoch() - year + Duration::milliseconds(*offset);
        let id = v7(at, &mut rng);
        let reply_to = (!post_ids.is_empty() && rng.random_ratio(1, 10))
            .then(|| post_ids[rng.random_range(0..post_ids.len())]);
        let mut row = String::with_capacity(160);
        let _ = writeln!(
            row,
            "{id}\t{}\tpost {} by user{author}\t{}\t{}",
            ids[*author],
            post_ids.len(),
            null_or(reply_to),
            at.to_rfc3339()
        );
        rows.push(row);
        post_ids.push(id);
    }
    let mut posts = connect(host, database, "posts").await?;
    sqlx::raw_sql("TRUNCATE posts.likes, posts.posts, posts.author_heads, posts.idempotency_keys, posts.moderation_actions").execute(&mut posts).await?;
    copy(
        &mut posts,
        "COPY posts.posts (id, author_id, text, reply_to, created_at) FROM STDIN",
        rows.into_iter(),
    )
    .await?;
    sqlx::raw_sql(
        "INSERT INTO posts.author_heads (author_id, last_post_at, last_root_post_at)
         SELECT author_id, max(created_at), max(created_at) FILTER (WHERE reply_to IS NULL) FROM posts.posts GROUP BY author_id;
         UPDATE posts.posts p SET reply_count = r.n FROM (SELECT reply_to, count(*) AS n FROM posts.posts WHERE reply_to IS NOT NULL GROUP BY reply_to) r WHERE p.id = r.reply_to;",
    )
    .execute(&mut posts)
    .await?;
    // Outside any transaction: VACUUM sets the visibility map, so the feed's index-only scans
    // (over posts and over the heads) do not visit the heap, as on a settled production table.
    sqlx::raw_sql("VACUUM ANALYZE posts.posts")
        .execute(&mut posts)
        .await?;
    sqlx::raw_sql("VACUUM ANALYZE posts.author_heads")
        .execute(&mut posts)
        .await?;
    eprintln!(
        "[{:?}] posts schema written: {} posts",
        started.elapsed(),
        post_ids.len()
    );

    // Direct conversations between a reader and someone they follow, with a few messages.
    let mut messaging = connect(host, database, "messaging").await?;
    sqlx::raw_sql("TRUNCATE messaging.messages, messaging.participants, messaging.conversations")
        .execute(&mut messaging)
        .await?;
    let mut conversations = Vec::new();
    let mut pairs = HashSet::new();
    while conversations.len() < size.conversations {
        let a = rng.random_range(0..total);
        let b = popularity.sample(&mut rng);
        let key = if ids[a] < ids[b] {
            (ids[a], ids[b])
        } else {
            (ids[b], ids[a])
        };
        if a != b && pairs.insert(key) {
            conversations.push((v7(epoch() - Duration::days(30), &mut rng), ids[a], ids[b]));
        }
    }
    let per = size.messages_per_conversation;
    let conversation_rows = conversations.iter().map(|(id, a, b)| {
        let key = if a < b {
            format!("{a}:{b}")
        } else {
            format!("{b}:{a}")
        };
        format!(
            "{id}\tdirect\t\\N\t\\N\t{key}\t{per}\t{}\t{}\n",
            epoch().to_rfc3339(),
            (epoch() - Duration::days(30)).to_rfc3339()
        )
    });
    copy(
        &mut messaging,
        "COPY messaging.conversations (id, kind, title, owner_id, direct_key, last_seq, last_message_at, created_at) FROM STDIN",
        conversation_rows,
    )
    .await?;
    let participant_rows = conversations
        .iter()
        .flat_map(|(id, a, b)| [format!("{id}\t{a}\t{per}\n"), format!("{id}\t{b}\t{per}\n")]);
    copy(
        &mut messaging,
        "COPY messaging.participants (conversation_id, user_id, read_seq) FROM STDIN",
        participant_rows,
    )
    .await?;
    let mut message_rows = Vec::new();
    for (id, a, b) in &conversations {
        for seq in 1..=per {
            let sender = if seq % 2 == 0 { a } else { b };
            let at = epoch() - Duration::days(30) + Duration::minutes(seq as i64);
            message_rows.push(format!(
                "{}\t{id}\t{seq}\t{sender}\ttext\tmessage {seq}\t{}\n",
                v7(at, &mut rng),
                at.to_rfc3339()
            ));
        }
    }
    copy(
        &mut messaging,
        "COPY messaging.messages (id, conversation_id, seq, sender_id, kind, body, created_at) FROM STDIN",
        message_rows.into_iter(),
    )
    .await?;
    sqlx::raw_sql("ANALYZE messaging.conversations; ANALYZE messaging.participants; ANALYZE messaging.messages").execute(&mut messaging).await?;
    eprintln!(
        "[{:?}] messaging schema written: {} conversations",
        started.elapsed(),
        conversations.len()
    );

    let manifest = Manifest {
        readers: reader_ids,
        authors: ids[..regular.min(2000)].to_vec(),
        posts: post_ids
            .iter()
            .rev()
            .step_by(97)
            .take(20_000)
            .copied()
            .collect(),
        conversations,
    };
    std::fs::create_dir_all(work_dir)?;
    std::fs::write(
        format!("{work_dir}/manifest.json"),
        serde_json::to_vec(&manifest)?,
    )?;
    eprintln!(
        "[{:?}] done; manifest in {work_dir}/manifest.json",
        started.elapsed()
    );
    Ok(())
}
