//! Pictures for the panels: thumbnails (of photos and of crops) and full photos, decoded on
//! a small pool of threads, never on the UI thread. Thumbnails are also kept on disk
//! (`data_dir()/thumbnails`, keyed by the photo's content hash and the box), so a catalogue
//! of 100,000 photos decodes each photo once, not at every start.
//!
//! A panel asks `ImageCache::get` every frame for what it shows; the first ask queues the
//! work, later asks answer from the cache. The newest asks are served first, and when the
//! queue overflows (fast scrolling) the oldest asks are dropped, to be asked again if their
//! photo is still on screen.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};

use eframe::egui;
use image::DynamicImage;

use crate::base::vocabulary::BoxPx;
use crate::catalogue::box_key;

/// The longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 192;
/// The longest side of a photo shown for annotation; larger photos are scaled down for display
/// only (boxes stay in the photo's own pixels).
pub const VIEW_SIDE: u32 = 4096;
/// Thumbnails kept as textures (about 110 kB each).
const THUMBNAIL_TEXTURES: usize = 800;
/// Full photos kept as textures (the one shown and the next ones prefetched).
const VIEW_TEXTURES: usize = 4;
/// Thumbnail asks waiting at most; older ones are dropped.
const MAX_QUEUED: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    Thumbnail,
    View,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageKey {
    pub hash: String,
    /// `whole`, or the box as `catalogue::box_key` writes it.
    pub crop: String,
    pub size: Size,
}

/// What to show: a photo (or a crop of it), at a size.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub hash: String,
    pub file: PathBuf,
    pub bbox: Option<BoxPx>,
    pub size: Size,
}

impl ImageRequest {
    pub fn thumbnail(hash: &str, file: &Path, bbox: Option<BoxPx>) -> Self {
        ImageRequest { hash: hash.to_string(), file: file.to_path_buf(), bbox, size: Size::Thumbnail }
    }

    pub fn view(hash: &str, file: &Path) -> Self {
        ImageRequest { hash: hash.to_string(), file: file.to_path_buf(), bbox: None, size: Size::View }
    }

    fn key(&self) -> ImageKey {
        ImageKey { hash: self.hash.clone(), crop: box_key(self.bbox.as_ref()), size: self.size }
    }
}

/// What `get` answers.
pub enum Picture<'a> {
    Loading,
    Ready(&'a egui::TextureHandle),
    /// The photo cannot be shown; the text says why (the caller names the file).
    Failed(&'a str),
}

enum Slot {
    Pending,
    Ready(egui::TextureHandle),
    Failed(String),
}

struct Entry {
    slot: Slot,
    last_used: u64,
}

enum Decoded {
    Image(egui::ColorImage),
    Failed(String),
    /// Dropped from the queue before it was decoded.
    Dropped,
}

#[derive(Default)]
struct Queue {
    views: Vec<(ImageKey, ImageRequest)>,
    thumbnails: VecDeque<(ImageKey, ImageRequest)>,
    closed: bool,
}

/// The requests waiting for a decoder, and the bell that wakes an idle one.
struct RequestQueue {
    queue: Mutex<Queue>,
    wake: Condvar,
}

pub struct ImageCache {
    ctx: egui::Context,
    entries: HashMap<ImageKey, Entry>,
    frame: u64,
    shared: Arc<RequestQueue>,
    results: Receiver<(ImageKey, Decoded)>,
    results_tx: Sender<(ImageKey, Decoded)>,
    threads: Vec<std::thread::JoinHandle<()>>,
    cache_dir: PathBuf,
}

impl ImageCache {
    pub fn new(ctx: egui::Context, cache_dir: PathBuf) -> Self {
        let shared = Arc::new(RequestQueue { queue: Mutex::new(Queue::default()), wake: Condvar::new() });
        let (results_tx, results) = channel();
        let n = std::thread::available_parallelism().map(|n| n.get().clamp(2, 4)).unwrap_or(2);
        let threads = (0..n)
            .filter_map(|i| {
                let shared = shared.clone();
                let tx = results_tx.clone();
                let ctx = ctx.clone();
                let dir = cache_dir.clone();
                std::thread::Builder::new()
                    .name(format!("images {i}"))
                    .spawn(move || decode_loop(&shared, &tx, &ctx, &dir))
                    .ok()
            })
            .collect();
        ImageCache { ctx, entries: HashMap::new(), frame: 0, shared, results, results_tx, threads, cache_dir }
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Called once a frame: turns decoded pictures into textures and forgets the least
    /// recently shown ones.
    pub fn begin_frame(&mut self) {
        self.frame += 1;
        let mut received = 0;
        while let Ok((key, decoded)) = self.results.try_recv() {
            received += 1;
            let slot = match decoded {
                Decoded::Image(img) => {
                    let name = format!("{}/{}/{:?}", key.hash, key.crop, key.size);
                    Slot::Ready(self.ctx.load_texture(name, img, egui::TextureOptions::LINEAR))
                }
                Decoded::Failed(e) => Slot::Failed(e),
                Decoded::Dropped => {
                    self.entries.remove(&key);
                    continue;
                }
            };
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.slot = slot;
            }
        }
        if received > 0 {
            self.evict(Size::Thumbnail, THUMBNAIL_TEXTURES);
            self.evict(Size::View, VIEW_TEXTURES);
        }
    }

    fn evict(&mut self, size: Size, keep: usize) {
        let mut ready: Vec<(u64, ImageKey)> = self
            .entries
            .iter()
            .filter(|(k, e)| k.size == size && !matches!(e.slot, Slot::Pending))
            .map(|(k, e)| (e.last_used, k.clone()))
            .collect();
        if ready.len() <= keep {
            return;
        }
        ready.sort_unstable_by_key(|(used, _)| *used);
        let excess = ready.len() - keep;
        for (_, key) in ready.into_iter().take(excess) {
            self.entries.remove(&key);
        }
    }

    /// The picture, asking for it when it is not cached.
    pub fn get(&mut self, request: &ImageRequest) -> Picture<'_> {
        let key = request.key();
        let frame = self.frame;
        if !self.entries.contains_key(&key) {
            self.enqueue(key.clone(), request.clone());
            self.entries.insert(key.clone(), Entry { slot: Slot::Pending, last_used: frame });
        }
        let entry = self.entries.get_mut(&key).expect("inserted above");
        entry.last_used = frame;
        match &entry.slot {
            Slot::Pending => Picture::Loading,
            Slot::Ready(t) => Picture::Ready(t),
            Slot::Failed(e) => Picture::Failed(e),
        }
    }

    /// Asks for a picture that will be needed soon (the next photo of a review).
    pub fn prefetch(&mut self, request: &ImageRequest) {
        let _ = self.get(request);
    }

    /// Forgets the pictures that could not be shown, so they are tried again (a relinked or
    /// restored photo shows after a reload).
    pub fn forget_failures(&mut self) {
        self.entries.retain(|_, e| !matches!(e.slot, Slot::Failed(_)));
    }

    /// Pictures asked for and not decoded yet.
    pub fn pending(&self) -> usize {
        self.entries.values().filter(|e| matches!(e.slot, Slot::Pending)).count()
    }

    fn enqueue(&self, key: ImageKey, request: ImageRequest) {
        let Ok(mut q) = self.shared.queue.lock() else { return };
        match key.size {
            Size::View => q.views.push((key, request)),
            Size::Thumbnail => {
                q.thumbnails.push_back((key, request));
                while q.thumbnails.len() > MAX_QUEUED {
                    if let Some((old, _)) = q.thumbnails.pop_front() {
                        let _ = self.results_tx.send((old, Decoded::Dropped));
                    }
                }
            }
        }
        self.shared.wake.notify_one();
    }
}

impl Drop for ImageCache {
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.closed = true;
            q.views.clear();
            q.thumbnails.clear();
        }
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn decode_loop(shared: &RequestQueue, tx: &Sender<(ImageKey, Decoded)>, ctx: &egui::Context, cache_dir: &Path) {
    loop {
        let (key, request) = {
            let Ok(mut q) = shared.queue.lock() else { return };
            loop {
                if q.closed {
                    return;
                }
                // Newest first: what is on screen now matters more than what scrolled by.
                if let Some(job) = q.views.pop().or_else(|| q.thumbnails.pop_back()) {
                    break job;
                }
                q = match shared.wake.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
        };
        let decoded = match load(&request, cache_dir) {
            Ok(img) => Decoded::Image(img),
            Err(e) => Decoded::Failed(e),
        };
        if tx.send((key, decoded)).is_err() {
            return;
        }
        ctx.request_repaint();
    }
}

/// Where a thumbnail is kept on disk.
pub fn thumbnail_file(cache_dir: &Path, hash: &str, bbox: Option<&BoxPx>) -> PathBuf {
    let crop: String = box_key(bbox)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .collect();
    let shard = hash.get(..2).unwrap_or("00");
    cache_dir.join(shard).join(format!("{hash}_{crop}.jpg"))
}

fn load(request: &ImageRequest, cache_dir: &Path) -> Result<egui::ColorImage, String> {
    match request.size {
        Size::Thumbnail => {
            let cached = thumbnail_file(cache_dir, &request.hash, request.bbox.as_ref());
            // A damaged cache file is remade from the photo.
            if let Ok(img) = image::open(&cached) {
                return Ok(to_color_image(&img));
            }
            let photo = crate::base::photo::decode_file(&request.file)?;
            let crop = crate::base::crop::crop(&photo, request.bbox);
            let thumb = crop.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE);
            store_thumbnail(&thumb, &cached);
            Ok(to_color_image(&thumb))
        }
        Size::View => {
            let photo = crate::base::photo::decode_file(&request.file)?;
            let photo = if photo.width().max(photo.height()) > VIEW_SIDE {
                photo.resize(VIEW_SIDE, VIEW_SIDE, image::imageops::FilterType::Triangle)
            } else {
                photo
            };
            Ok(to_color_image(&photo))
        }
    }
}

/// Best effort: a thumbnail that cannot be stored is simply made again next time.
fn store_thumbnail(img: &DynamicImage, path: &Path) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let mut bytes = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85);
    if img.to_rgb8().write_with_encoder(encoder).is_ok() && std::fs::write(&tmp, &bytes).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
    let _ = std::fs::remove_file(&tmp);
}

fn to_color_image(img: &DynamicImage) -> egui::ColorImage {
    let rgba = img.to_rgba8();
    egui::ColorImage::from_rgba_unmultiplied([rgba.width() as usize, rgba.height() as usize], rgba.as_raw())
}

/// Deletes the oldest thumbnails until the cache is at most `limit_bytes`; returns
/// (files removed, bytes kept).
pub fn trim_cache(cache_dir: &Path, limit_bytes: u64) -> std::io::Result<(usize, u64)> {
    if !cache_dir.exists() {
        return Ok((0, 0));
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(cache_dir).into_iter().filter_map(Result::ok) {
        if entry.file_type().is_file()
            && let Ok(meta) = entry.metadata()
        {
            let when = meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            files.push((when, meta.len(), entry.into_path()));
        }
    }
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort_by_key(|f| f.0);
    let mut removed = 0;
    for (_, len, path) in files {
        if total <= limit_bytes {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
            removed += 1;
        }
    }
    Ok((removed, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_are_cached_by_content_hash_and_box() {
        let dir = Path::new("/cache");
        let whole = thumbnail_file(dir, "abcdef", None);
        let boxed = thumbnail_file(dir, "abcdef", Some(&BoxPx::new(1.0, 2.0, 3.0, 4.0)));
        assert_eq!(whole, Path::new("/cache/ab/abcdef_whole.jpg"));
        assert_ne!(whole, boxed);
        assert!(boxed.to_str().unwrap().ends_with("abcdef_1.00_2.00_3.00_4.00.jpg"), "{}", boxed.display());
    }

    #[test]
    fn trimming_the_cache_removes_the_oldest_files_first() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in ["old", "mid", "new"].iter().enumerate() {
            let path = dir.path().join(format!("{name}.jpg"));
            std::fs::write(&path, vec![0u8; 1000]).unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + i as u64);
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(t).unwrap();
        }
        let (removed, kept) = trim_cache(dir.path(), 2000).unwrap();
        assert_eq!((removed, kept), (1, 2000));
        assert!(!dir.path().join("old.jpg").exists());
        assert!(dir.path().join("new.jpg").exists());
    }

    #[test]
    fn a_missing_photo_fails_with_a_reason_and_no_panic() {
        let dir = tempfile::tempdir().unwrap();
        let request = ImageRequest::thumbnail("00ff", &dir.path().join("gone.jpg"), None);
        let err = load(&request, dir.path()).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
    }
}
