//! Keys and sealed blobs. Everything stored except `config` and `locks/` is sealed: a one-byte
//! compression tag and the (possibly zstd-compressed) bytes, encrypted with AES-256-GCM under
//! the repository's data key with a fresh random 96-bit nonce, stored as `nonce || ciphertext`.
//! The master key is random and is stored wrapped under a key derived from the passphrase with
//! argon2id. No cryptography is written here: aes-gcm, argon2 and blake3 do it.

use crate::error::{Error, Result};
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

const NONCE_LEN: usize = 12;
const TAG_RAW: u8 = 0;
const TAG_ZSTD: u8 = 1;

/// A chunk, tree or pack identifier: 32 bytes shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn parse(s: &str) -> Option<Id> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Id(out))
    }

    /// The unkeyed hash of stored bytes; names packs, index files and snapshots.
    pub fn of_stored(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }
}

impl std::fmt::Debug for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Id, D::Error> {
        let s = String::deserialize(d)?;
        Id::parse(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// The repository's secrets: the data key, the key of chunk ids, and the chunker's seed.
#[derive(Clone, Serialize, Deserialize)]
pub struct MasterKey {
    #[serde(with = "hex::serde")]
    data: [u8; 32],
    #[serde(with = "hex::serde")]
    id: [u8; 32],
    chunker_seed: u64,
}

impl MasterKey {
    pub fn random() -> MasterKey {
        let mut rng = rand::thread_rng();
        let mut k = MasterKey {
            data: [0; 32],
            id: [0; 32],
            chunker_seed: rng.next_u64(),
        };
        rng.fill_bytes(&mut k.data);
        rng.fill_bytes(&mut k.id);
        k
    }

    /// The id of a chunk: blake3 keyed with a secret, so ids do not reveal content.
    pub fn chunk_id(&self, plain: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id, plain).as_bytes())
    }

    /// The seed XOR-ed into the chunker's gear table, so boundaries depend on a secret.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(&self.data).expect("32-byte key")
    }

    /// Compresses (when it pays) and encrypts.
    pub fn seal(&self, plain: &[u8], zstd_level: i32) -> Vec<u8> {
        let mut framed = Vec::with_capacity(plain.len() + 1);
        let compressed = if zstd_level > 0 && plain.len() > 64 {
            zstd::bulk::compress(plain, zstd_level)
                .ok()
                .filter(|c| c.len() < plain.len())
        } else {
            None
        };
        match compressed {
            Some(c) => {
                framed.push(TAG_ZSTD);
                framed.extend_from_slice(&c);
            }
            None => {
                framed.push(TAG_RAW);
                framed.extend_from_slice(plain);
            }
        }
        seal_with(&self.cipher(), &framed)
    }

    /// Decrypts and decompresses; `raw_len` bounds the decompressed size.
    pub fn open(&self, sealed: &[u8], raw_len: usize) -> Result<Vec<u8>> {
        let framed = open_with(&self.cipher(), sealed)?;
        match framed.split_first() {
            Some((&TAG_RAW, rest)) => Ok(rest.to_vec()),
            Some((&TAG_ZSTD, rest)) => zstd::bulk::decompress(rest, raw_len.max(1))
                .map_err(|e| Error::corrupt(format!("zstd: {e}"))),
            _ => Err(Error::corrupt("unknown compression tag")),
        }
    }

    /// Decrypts a blob whose size is not known beforehand (snapshots, index files, WAL).
    pub fn open_unbounded(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        let framed = open_with(&self.cipher(), sealed)?;
        match framed.split_first() {
            Some((&TAG_RAW, rest)) => Ok(rest.to_vec()),
            Some((&TAG_ZSTD, rest)) => {
                zstd::stream::decode_all(rest).map_err(|e| Error::corrupt(format!("zstd: {e}")))
            }
            _ => Err(Error::corrupt("unknown compression tag")),
        }
    }
}

fn seal_with(cipher: &Aes256Gcm, plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), plain)
        .expect("aes-gcm encrypt");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

fn open_with(cipher: &Aes256Gcm, sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(Error::corrupt("sealed blob too short"));
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(Nonce::from_slice(nonce), ct)
        .map_err(|_| Error::corrupt("authentication failed (data altered or wrong key)"))
}

/// A stored key: the master key wrapped under a key derived from a passphrase.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub kdf: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    #[serde(with = "hex::serde")]
    pub salt: Vec<u8>,
    #[serde(with = "hex::serde")]
    pub wrapped: Vec<u8>,
    pub created: String,
    pub host: String,
}

/// argon2id cost for new keys: 19 MiB, 2 passes, OWASP's recommended setting, paid once per
/// command. A key keeps the cost it was made with (earlier ones: 64 MiB, 3 passes); the
/// memory is freed before a backup or restore begins, so it bounds their peak from below.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;

impl KeyFile {
    pub fn wrap(master: &MasterKey, passphrase: &[u8], created: String, host: String) -> KeyFile {
        let mut salt = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        let kek = derive(passphrase, &salt, M_COST_KIB, T_COST, 1);
        let plain = serde_json::to_vec(master).expect("master key serializes");
        KeyFile {
            kdf: "argon2id".into(),
            m_cost_kib: M_COST_KIB,
            t_cost: T_COST,
            p_cost: 1,
            salt,
            wrapped: seal_with(&kek, &plain),
            created,
            host,
        }
    }

    /// `None` when the passphrase does not open this key.
    pub fn unwrap(&self, passphrase: &[u8]) -> Option<MasterKey> {
        if self.kdf != "argon2id" {
            return None;
        }
        let kek = derive(
            passphrase,
            &self.salt,
            self.m_cost_kib,
            self.t_cost,
            self.p_cost,
        );
        let plain = open_with(&kek, &self.wrapped).ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

fn derive(passphrase: &[u8], salt: &[u8], m: u32, t: u32, p: u32) -> Aes256Gcm {
    let params = argon2::Params::new(m, t, p, Some(32)).expect("valid argon2 params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(passphrase, salt, &mut out)
        .expect("argon2id");
    Aes256Gcm::new_from_slice(&out).expect("32-byte key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_blobs_round_trip_and_detect_tampering() {
        let k = MasterKey::random();
        let plain =
            b"hello hello hello hello hello hello hello hello hello hello hello hello".repeat(10);
        let sealed = k.seal(&plain, 3);
        assert!(sealed.len() < plain.len(), "repetitive data is compressed");
        assert_eq!(k.open(&sealed, plain.len()).unwrap(), plain);
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(k.open(&bad, plain.len()).is_err());
        assert!(
            MasterKey::random().open(&sealed, plain.len()).is_err(),
            "another key cannot open"
        );
    }

    #[test]
    fn key_file_opens_only_with_its_passphrase() {
        let k = MasterKey::random();
        let f = KeyFile::wrap(&k, b"correct horse", "now".into(), "h".into());
        assert!(f.unwrap(b"wrong").is_none());
        let back = f.unwrap(b"correct horse").unwrap();
        assert_eq!(back.chunk_id(b"x"), k.chunk_id(b"x"));
        assert_ne!(
            MasterKey::random().chunk_id(b"x"),
            k.chunk_id(b"x"),
            "chunk ids are keyed"
        );
    }
}
