//! Workload 7: parallel gzip (issue 17), the work of `examples/pgzip.rs`,
//! over the largest `librustc_driver-*.so` of the toolchain (about 153 MB of
//! real machine code), at level 6, beside what a user would pick instead,
//! in one process, one group, throughput in input bytes:
//!
//! - `parapipe`: the example's `compress`, 2 workers, reading the file in
//!   128 KiB chunks as it goes (from the page cache after the first run),
//!   writing to `io::sink()`.
//! - `rayon`: the same compression rayon's obvious way, on a pool of 2
//!   threads: `par_chunks(128 KiB)` over the file's bytes, loaded into memory
//!   once before measuring, every chunk's output collected, then written
//!   in order to `io::sink()`. Same chunks, same dictionaries: the same
//!   output bytes as parapipe's (checked before measuring).
//! - `single`: flate2's `GzEncoder` (zlib-rs) over the same bytes in memory,
//!   one thread.
//! - `pigz_p2`: `pigz -p 2 -6 -c FILE > /dev/null`, a process per run
//!   (its start-up is part of its time). Without pigz, this row alone is
//!   skipped, loudly.
//!
//! Before measuring, every variant's output is decompressed once and
//! compared with the file; each measured run checks the output's length.
//! Peak memory is not measured here: `scripts/bench-report.py` runs the
//! example and its `--rayon` variant and reads their `VmHWM`.
//!
//! Run with `cargo bench --bench pgzip`.

#[allow(dead_code, reason = "each bench uses part of the shared module")]
mod common;
#[allow(dead_code, reason = "the bench uses part of the example")]
#[path = "../examples/pgzip.rs"]
mod pgzip;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

const PIGZ: &str = "pigz";

/// A writer that keeps only the number of bytes written.
#[derive(Default)]
struct Count(u64);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// flate2's single-threaded gzip encoder over `data`, into `out`.
fn single<W: Write>(data: &[u8], out: W) -> W {
    let mut gz = GzEncoder::new(out, Compression::new(pgzip::LEVEL));
    gz.write_all(data).expect("in-memory output");
    gz.finish().expect("in-memory output")
}

/// `pigz -p 2` (or as many threads as `PARAPIPE_BENCH_THREADS` says, the
/// row keeping its name) at the same level on `input`, its output to `out`.
fn pigz(input: &Path, out: Stdio) -> Command {
    let mut cmd = Command::new(PIGZ);
    let threads = common::threads().to_string();
    cmd.args(["-p", threads.as_str(), &format!("-{}", pgzip::LEVEL), "-c"])
        .arg(input)
        .stdout(out);
    cmd
}

fn pigz_installed() -> bool {
    Command::new(PIGZ)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Decompresses every gzip member of `gz` and checks that it is `data`.
fn check_decodes(what: &str, gz: &[u8], data: &[u8]) {
    let mut out = Vec::with_capacity(data.len());
    MultiGzDecoder::new(gz)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{what}: not valid gzip: {e}"));
    assert!(out == data, "{what}: does not decompress to the input");
}

fn pgzip_bench(c: &mut Criterion) {
    let input = pgzip::default_input().expect("the toolchain's librustc_driver-*.so");
    let data = fs::read(&input).expect("the input file");
    let len = data.len() as u64;
    let pool = common::rayon_pool();
    let pigz_ok = pigz_installed();
    if !pigz_ok {
        eprintln!("\n*** SKIPPED pigz: not installed (Debian: apt-get install pigz) ***\n");
    }

    // Once, before measuring: every variant gives the input back, and
    // parapipe and rayon write the same bytes.
    let open = || File::open(&input).expect("the input file");
    let mut para = Vec::new();
    let para_stats = pgzip::compress(open(), &mut para, pgzip::LEVEL, common::threads()).unwrap();
    check_decodes("parapipe", &para, &data);
    let mut ray = Vec::new();
    pool.install(|| pgzip::compress_rayon(&data, &mut ray, pgzip::LEVEL))
        .unwrap();
    assert!(ray == para, "rayon and parapipe wrote different bytes");
    let one = single(&data, Vec::new());
    check_decodes("single", &one, &data);
    let single_len = one.len() as u64;
    let mut sizes = format!(
        "pgzip: {} ({len} bytes) at level {}: parapipe and rayon {} bytes, single {single_len}",
        input.display(),
        pgzip::LEVEL,
        para.len()
    );
    if pigz_ok {
        let out = pigz(&input, Stdio::piped()).output().expect("pigz runs");
        assert!(out.status.success(), "pigz failed: {}", out.status);
        check_decodes("pigz", &out.stdout, &data);
        sizes += &format!(", pigz {}", out.stdout.len());
    }
    eprintln!("{sizes} bytes");
    drop((para, ray, one));

    let mut group = c.benchmark_group("pgzip");
    group.throughput(Throughput::Bytes(len));
    common::configure(&mut group, Duration::from_secs(10));
    group.bench_function("parapipe", |b| {
        b.iter(|| {
            let stats =
                pgzip::compress(open(), io::sink(), pgzip::LEVEL, common::threads()).unwrap();
            assert_eq!(stats, para_stats);
        })
    });
    group.bench_function("rayon", |b| {
        b.iter(|| {
            let stats = pool
                .install(|| pgzip::compress_rayon(&data, io::sink(), pgzip::LEVEL))
                .unwrap();
            assert_eq!(stats, para_stats);
        })
    });
    group.bench_function("single", |b| {
        b.iter(|| assert_eq!(single(&data, Count::default()).0, single_len))
    });
    if pigz_ok {
        group.bench_function("pigz_p2", |b| {
            b.iter(|| {
                let null = File::create("/dev/null").expect("/dev/null");
                let status = pigz(&input, null.into()).status().expect("pigz runs");
                assert!(status.success(), "pigz failed: {status}");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pgzip_bench);
criterion_main!(benches);
