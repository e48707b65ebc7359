//! Behaviour every [`Store`] backend must show. Backends call [`run_all`]
//! from their own tests; each check uses fresh room and user names so the
//! suite can run against a shared, non-empty backend (a real Redis).

use std::sync::atomic::{AtomicU64, Ordering};

use dialtone_proto::{Name, Ref, RoomName};

use crate::{NewMessage, Store, StoreError};

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn fresh(prefix: &str) -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}{t:x}{n}")
}

fn msg(room: &RoomName, from: &str, body: &str, cid: Option<&str>) -> NewMessage {
    NewMessage {
        room: room.clone(),
        from: Name::parse(from).expect("test name"),
        body: body.into(),
        cid: cid.map(|c| Ref::Str(c.into())),
        ts: 1,
    }
}

/// Runs every check; panics on the first failure.
pub async fn run_all(store: &dyn Store) {
    seq_starts_at_one_and_is_gap_free(store).await;
    repeated_cid_returns_the_original(store).await;
    cid_is_scoped_to_its_user(store).await;
    history_pages_by_after_and_limit(store).await;
    users_register_once(store).await;
}

pub async fn seq_starts_at_one_and_is_gap_free(store: &dyn Store) {
    let room = RoomName::parse(&fresh("r")).expect("room");
    assert_eq!(store.latest_seq(&room).await, Ok(0));
    for want in 1..=5 {
        let a = store
            .append(msg(&room, "u", "b", None))
            .await
            .expect("append");
        assert_eq!(a.seq, want);
        assert!(!a.duplicate);
    }
    assert_eq!(store.latest_seq(&room).await, Ok(5));
}

pub async fn repeated_cid_returns_the_original(store: &dyn Store) {
    let room = RoomName::parse(&fresh("r")).expect("room");
    let first = store
        .append(msg(&room, "u", "b", Some("c1")))
        .await
        .expect("append");
    store
        .append(msg(&room, "u", "other", None))
        .await
        .expect("append");
    let again = store
        .append(msg(&room, "u", "b", Some("c1")))
        .await
        .expect("append");
    assert!(again.duplicate);
    assert_eq!(
        (again.seq, &again.id, &again.frame),
        (first.seq, &first.id, &first.frame)
    );
    assert_eq!(store.latest_seq(&room).await, Ok(2));
}

pub async fn cid_is_scoped_to_its_user(store: &dyn Store) {
    let room = RoomName::parse(&fresh("r")).expect("room");
    let a = store
        .append(msg(&room, "alice", "b", Some("same")))
        .await
        .expect("append");
    let b = store
        .append(msg(&room, "bob", "b", Some("same")))
        .await
        .expect("append");
    assert!(!b.duplicate);
    assert_eq!((a.seq, b.seq), (1, 2));
}

pub async fn history_pages_by_after_and_limit(store: &dyn Store) {
    let room = RoomName::parse(&fresh("r")).expect("room");
    for i in 0..10 {
        store
            .append(msg(&room, "u", &format!("m{i}"), None))
            .await
            .expect("append");
    }
    let page = store.history(&room, 3, 4).await.expect("history");
    let seqs: Vec<u64> = page
        .iter()
        .map(|f| {
            serde_json::from_slice::<serde_json::Value>(f).expect("json")["seq"]
                .as_u64()
                .expect("seq")
        })
        .collect();
    assert_eq!(seqs, [4, 5, 6, 7]);
    assert_eq!(store.history(&room, 10, 5).await.expect("history").len(), 0);
    assert_eq!(
        store.history(&room, 0, 100).await.expect("history").len(),
        10
    );
    let empty = RoomName::parse(&fresh("r")).expect("room");
    assert!(
        store
            .history(&empty, 0, 10)
            .await
            .expect("history")
            .is_empty()
    );
}

pub async fn users_register_once(store: &dyn Store) {
    let user = Name::parse(&fresh("u")).expect("name");
    assert_eq!(store.user_known(&user).await, Ok(false));
    store.create_user(&user, "h1".into()).await.expect("create");
    assert_eq!(
        store.create_user(&user, "h2".into()).await,
        Err(StoreError::UserExists)
    );
    assert_eq!(store.password_hash(&user).await, Ok(Some("h1".into())));
    let token_only = Name::parse(&fresh("t")).expect("name");
    store.touch_user(&token_only).await.expect("touch");
    assert_eq!(store.user_known(&token_only).await, Ok(true));
    assert_eq!(store.password_hash(&token_only).await, Ok(None));
}
