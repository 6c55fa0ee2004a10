//! An in-memory bucket with the same listing semantics as GCS (key order,
//! prefix, `/` delimiter, page tokens), for engine tests and benchmarks at
//! a scale the emulator cannot hold.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::{ByteStream, ListPage, ObjectMeta, ObjectStore, StorageError, StorageResult};

#[derive(Clone, Default)]
pub struct MemoryStore {
    name: String,
    objects: Arc<Mutex<BTreeMap<String, (ObjectMeta, Bytes)>>>,
    generation: Arc<std::sync::atomic::AtomicI64>,
}

impl MemoryStore {
    pub fn new(name: &str) -> Self {
        MemoryStore {
            name: name.to_owned(),
            ..Default::default()
        }
    }

    /// Inserts an object synchronously (test and bench setup).
    pub fn put(&self, key: &str, body: impl Into<Bytes>, content_type: &str) -> ObjectMeta {
        let body = body.into();
        let generation = self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let meta = ObjectMeta {
            key: key.to_owned(),
            size: body.len() as u64,
            generation,
            etag: format!("g{generation}"),
            updated: None,
            content_type: Some(content_type.to_owned()),
        };
        self.objects
            .lock()
            .expect("lock")
            .insert(key.to_owned(), (meta.clone(), body));
        meta
    }

    pub fn remove(&self, key: &str) -> bool {
        self.objects.lock().expect("lock").remove(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.objects.lock().expect("lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        format!("memory://{}", self.name)
    }

    async fn check(&self) -> StorageResult<()> {
        Ok(())
    }

    async fn list_page(
        &self,
        prefix: &str,
        recursive: bool,
        page_token: Option<String>,
        page_size: u32,
    ) -> StorageResult<ListPage> {
        let objects = self.objects.lock().expect("lock");
        let start = match &page_token {
            Some(t) => Bound::Excluded(t.clone()),
            None => Bound::Included(prefix.to_owned()),
        };
        let mut page = ListPage::default();
        let mut last: Option<String> = None;
        let mut count = 0u32;
        for (key, (meta, _)) in objects.range((start, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if count == page_size {
                page.next_page_token = last.clone();
                break;
            }
            let rest = &key[prefix.len()..];
            match rest.find('/') {
                Some(i) if !recursive => {
                    let dir = format!("{prefix}{}", &rest[..=i]);
                    if page.prefixes.last() != Some(&dir) {
                        page.prefixes.push(dir);
                    }
                }
                _ => {
                    page.objects.push(meta.clone());
                    count += 1;
                }
            }
            last = Some(key.clone());
        }
        Ok(page)
    }

    async fn stat(&self, key: &str) -> StorageResult<ObjectMeta> {
        let objects = self.objects.lock().expect("lock");
        objects
            .get(key)
            .map(|(m, _)| m.clone())
            .ok_or_else(|| StorageError::NotFound(key.to_owned()))
    }

    async fn read_stream(
        &self,
        key: &str,
        generation: Option<i64>,
        start: u64,
        end: Option<u64>,
    ) -> StorageResult<ByteStream> {
        let body = {
            let objects = self.objects.lock().expect("lock");
            let (meta, body) = objects.get(key).ok_or_else(|| StorageError::NotFound(key.to_owned()))?;
            if generation.is_some_and(|g| g != meta.generation) {
                return Err(StorageError::NotFound(format!("{key} at generation {generation:?}")));
            }
            body.clone()
        };
        let len = body.len() as u64;
        let from = start.min(len) as usize;
        let to = end.map(|e| (e + 1).min(len)).unwrap_or(len) as usize;
        // Chunks of 64 KiB, like a network stream.
        let chunks: Vec<StorageResult<Bytes>> = (from..to.max(from))
            .step_by(65536)
            .map(|i| Ok(body.slice(i..(i + 65536).min(to))))
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn write(&self, key: &str, body: Bytes, content_type: &str) -> StorageResult<ObjectMeta> {
        Ok(self.put(key, body, content_type))
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        if self.remove(key) {
            Ok(())
        } else {
            Err(StorageError::NotFound(key.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lists_like_gcs() {
        let s = MemoryStore::new("b");
        for k in ["a/1.jpg", "a/2.jpg", "a/sub/3.jpg", "a/sub/4.jpg", "a/z.jpg", "b/5.jpg"] {
            s.put(k, "x", "image/jpeg");
        }
        let p = s.list_page("a/", false, None, 10).await.unwrap();
        let keys: Vec<_> = p.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, vec!["a/1.jpg", "a/2.jpg", "a/z.jpg"]);
        assert_eq!(p.prefixes, vec!["a/sub/"]);
        let mut token = None;
        let mut all = vec![];
        loop {
            let p = s.list_page("a/", true, token, 2).await.unwrap();
            all.extend(p.objects.into_iter().map(|o| o.key));
            match p.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(all.len(), 5);
        let body = s.read_all("a/1.jpg", None).await.unwrap();
        assert_eq!(&body[..], b"x");
    }
}
