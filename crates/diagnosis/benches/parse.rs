//! `cargo bench -p cascade-diagnosis`: how fast the regrtest parser reads
//! real output (every captured fixture, 3.10 to 3.14, repeated), and how
//! much heap it holds while streaming 1 MB against 64 MB of it. The numbers
//! go into docs/performance.md.

// A counting allocator needs `unsafe impl GlobalAlloc`; nothing else here is unsafe.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cascade_diagnosis::regrtest::Parser;

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn fixtures() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/regrtest");
    let mut texts = Vec::new();
    for entry in std::fs::read_dir(dir).expect("fixtures").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "txt") {
            texts.push(String::from_utf8_lossy(&std::fs::read(&path).expect("read")).into_owned());
        }
    }
    texts.sort();
    texts
}

/// Lines of real output, about `bytes` of them, as a worker would stream them.
fn lines(texts: &[String], bytes: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut total = 0;
    while total < bytes {
        for text in texts {
            for line in text.lines() {
                total += line.len() + 1;
                out.push(line.to_string());
            }
        }
    }
    out
}

/// Peak heap the parser adds while streaming `lines` (the lines themselves excluded).
fn peak_while_streaming(lines: &[String]) -> usize {
    let base = NOW.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut parser = Parser::new();
    for line in lines {
        parser.line(line);
    }
    let report = parser.finish();
    std::hint::black_box(&report);
    PEAK.load(Ordering::Relaxed) - base
}

fn main() {
    let texts = fixtures();
    let input = lines(&texts, 32 << 20);
    let bytes: usize = input.iter().map(|l| l.len() + 1).sum();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let mut parser = Parser::new();
        for line in &input {
            parser.line(line);
        }
        std::hint::black_box(parser.finish());
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!(
        "regrtest parser: {:.1} MB of real output in {:.3} s (best of 5): {:.0} MB/s",
        bytes as f64 / 1e6,
        best,
        bytes as f64 / 1e6 / best
    );
    for mb in [1usize, 64] {
        let input = lines(&texts, mb << 20);
        println!("peak heap held by the parser while streaming {mb} MB: {} KiB", peak_while_streaming(&input) / 1024);
    }
}
