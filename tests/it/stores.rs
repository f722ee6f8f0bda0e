//! An object store for tests that watches the one it wraps: reads counted, writes held back.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::sync::Semaphore;

/// Reads of each object, by key.
pub type Reads = Arc<Mutex<HashMap<String, usize>>>;

/// A bucket that counts the reads of each object, can hold every write until the test lets it
/// through, and otherwise passes everything to the bucket it wraps.
#[derive(Debug)]
pub struct WatchedStore {
    pub inner: Arc<dyn ObjectStore>,
    pub reads: Reads,
    /// When set, each write waits for a permit (and gives it back when done).
    pub put_gate: Option<Arc<Semaphore>>,
}

impl fmt::Display for WatchedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Watched({})", self.inner)
    }
}

type Pending<'a, T> = Pin<Box<dyn Future<Output = object_store::Result<T>> + Send + 'a>>;

// The trait is declared with `async_trait`; these are its methods written out.
impl ObjectStore for WatchedStore {
    fn put_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Pending<'c, PutResult>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            let _permit = match &self.put_gate {
                Some(gate) => Some(gate.acquire().await.expect("the gate stays open")),
                None => None,
            };
            self.inner.put_opts(location, payload, opts).await
        })
    }

    fn put_multipart_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        opts: PutMultipartOptions,
    ) -> Pending<'c, Box<dyn MultipartUpload>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.put_multipart_opts(location, opts)
    }

    fn get_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        options: GetOptions,
    ) -> Pending<'c, GetResult>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        if let Ok(mut reads) = self.reads.lock() {
            *reads.entry(location.to_string()).or_insert(0) += 1;
        }
        self.inner.get_opts(location, options)
    }

    fn delete<'a, 'b, 'c>(&'a self, location: &'b Path) -> Pending<'c, ()>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.delete(location)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_delimiter<'a, 'b, 'c>(
        &'a self,
        prefix: Option<&'b Path>,
    ) -> Pending<'c, ListResult>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.list_with_delimiter(prefix)
    }

    fn copy<'a, 'b, 'c, 'd>(&'a self, from: &'b Path, to: &'c Path) -> Pending<'d, ()>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        self.inner.copy(from, to)
    }

    fn copy_if_not_exists<'a, 'b, 'c, 'd>(&'a self, from: &'b Path, to: &'c Path) -> Pending<'d, ()>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        self.inner.copy_if_not_exists(from, to)
    }
}
