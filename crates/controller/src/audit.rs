//! The audit log (seed 004 REQ2, REQ7, REQ21): every enrolment, push, rekey, refusal and policy
//! change, appended to the `audit` table with a hash chain. Record n stores
//! `SHA-256(hash(n-1) ‖ n ‖ time ‖ kind ‖ subject ‖ detail)` (hash(0) = 32 zero bytes), so a
//! changed, inserted or removed record breaks every hash after it and `verify` names the first.
//! (Cutting records off the end is detectable only against a copy of the last hash, which
//! `zsfc audit verify` prints.)
use aws_lc_rs::digest;
use rusqlite::{Connection, params};

pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,
    detail TEXT NOT NULL, hash BLOB NOT NULL);";

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Enrol,
    Refused,
    Push,
    Rekey,
    Policy,
    Notification,
    Start,
    /// An administrative role bound to a key on a hardware token.
    RoleKey,
    /// A certificate renewed by its holder.
    Renew,
    /// An identity revoked (or a node given a new bootstrap token).
    Revoke,
    /// A client certificate issued by the operator.
    Issue,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Enrol => "enrol",
            Self::Refused => "refused",
            Self::Push => "push",
            Self::Rekey => "rekey",
            Self::Policy => "policy",
            Self::Notification => "notification",
            Self::Start => "start",
            Self::RoleKey => "role-key",
            Self::Renew => "renew",
            Self::Revoke => "revoke",
            Self::Issue => "issue",
        }
    }
}

fn hash(prev: &[u8], seq: i64, at: i64, kind: &str, subject: &str, detail: &str) -> Vec<u8> {
    let mut c = digest::Context::new(&digest::SHA256);
    c.update(prev);
    c.update(&seq.to_be_bytes());
    c.update(&at.to_be_bytes());
    for field in [kind, subject, detail] {
        c.update(&(field.len() as u64).to_be_bytes());
        c.update(field.as_bytes());
    }
    c.finish().as_ref().to_vec()
}

/// A database connection (to read the log without the rest of the controller).
pub type Db = Connection;

/// Opens a controller database for reading only.
pub fn open_read_only(path: &std::path::Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
}

pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Appends one record (in the caller's transaction, if any).
pub fn append(db: &Connection, kind: Kind, subject: &str, detail: &str) -> rusqlite::Result<()> {
    let last: Option<(i64, Vec<u8>)> = db
        .query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(Some)
        .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
    let (seq, prev) = last.map_or((1, vec![0u8; 32]), |(s, h)| (s + 1, h));
    let at = unix_ms();
    let h = hash(&prev, seq, at, kind.name(), subject, detail);
    db.execute(
        "INSERT INTO audit (seq, at, kind, subject, detail, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![seq, at, kind.name(), subject, detail, h],
    )?;
    Ok(())
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every record checks; the count and the last hash (hex).
    Intact { records: u64, head: String },
    /// The first record that does not check, and why.
    Broken { seq: i64, why: String },
}

/// Recomputes the chain from the first record.
pub fn verify(db: &Connection) -> rusqlite::Result<Verdict> {
    let mut stmt = db.prepare("SELECT seq, at, kind, subject, detail, hash FROM audit ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    let mut prev = vec![0u8; 32];
    let mut expected = 1i64;
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        if seq != expected {
            return Ok(Verdict::Broken { seq: expected, why: format!("record {expected} is missing (next is {seq})") });
        }
        let stored: Vec<u8> = r.get(5)?;
        let h = hash(&prev, seq, r.get(1)?, &r.get::<_, String>(2)?, &r.get::<_, String>(3)?, &r.get::<_, String>(4)?);
        if h != stored {
            return Ok(Verdict::Broken { seq, why: "its content does not match its hash".into() });
        }
        prev = h;
        expected += 1;
    }
    Ok(Verdict::Intact { records: (expected - 1) as u64, head: hex::encode(prev) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> Connection {
        let db = Connection::open_in_memory().unwrap();
        db.execute_batch(SCHEMA).unwrap();
        for (k, s) in [(Kind::Enrol, "sf1"), (Kind::Push, "sf1"), (Kind::Rekey, "domain"), (Kind::Refused, "x")] {
            append(&db, k, s, "detail").unwrap();
        }
        db
    }

    #[test]
    fn an_untouched_log_verifies() {
        match verify(&log()).unwrap() {
            Verdict::Intact { records, head } => {
                assert_eq!(records, 4);
                assert_eq!(head.len(), 64);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_modified_record_is_named() {
        let db = log();
        db.execute("UPDATE audit SET detail = 'nothing happened' WHERE seq = 2", []).unwrap();
        assert_eq!(verify(&db).unwrap(), Verdict::Broken { seq: 2, why: "its content does not match its hash".into() });
    }

    #[test]
    fn a_removed_record_is_named() {
        let db = log();
        db.execute("DELETE FROM audit WHERE seq = 3", []).unwrap();
        assert!(matches!(verify(&db).unwrap(), Verdict::Broken { seq: 3, .. }));
    }

    #[test]
    fn a_rehashed_record_still_breaks_the_next_one() {
        let db = log();
        let prev: Vec<u8> = db.query_row("SELECT hash FROM audit WHERE seq = 1", [], |r| r.get(0)).unwrap();
        let at: i64 = db.query_row("SELECT at FROM audit WHERE seq = 2", [], |r| r.get(0)).unwrap();
        let forged = hash(&prev, 2, at, "push", "sf1", "forged");
        db.execute("UPDATE audit SET detail = 'forged', hash = ?1 WHERE seq = 2", [forged]).unwrap();
        assert!(matches!(verify(&db).unwrap(), Verdict::Broken { seq: 3, .. }));
    }
}
