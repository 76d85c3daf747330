//! `examples/pgzip.rs` (parallel gzip) on real files of this machine: the
//! output is one gzip stream that `gzip -dc` and flate2 turn back into the
//! input, for a file of a few megabytes and for an empty file, a file
//! shorter than one chunk, of exactly one chunk and just over; the same
//! bytes from run to run and for any number of workers (and the same as
//! the rayon variant's); a missing or unreadable input is an error.

#[allow(dead_code, reason = "the tests use part of the example")]
#[path = "../examples/pgzip.rs"]
mod pgzip;

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A real file of 1 to 10 MB from this machine: the first, by name, in
/// /usr/bin, else under /usr/lib. Never generated: compressing real bytes
/// is the point.
fn real_file() -> PathBuf {
    const MIN: u64 = 1_000_000;
    const MAX: u64 = 10_000_000;
    fn find(dir: &Path, depth: usize) -> Option<PathBuf> {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in &entries {
            let Ok(meta) = fs::symlink_metadata(path) else {
                continue;
            };
            if meta.is_file() && (MIN..=MAX).contains(&meta.len()) && File::open(path).is_ok() {
                return Some(path.clone());
            }
        }
        if depth == 0 {
            return None;
        }
        entries
            .iter()
            .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
            .find_map(|p| find(p, depth - 1))
    }
    find(Path::new("/usr/bin"), 0)
        .or_else(|| find(Path::new("/usr/lib"), 3))
        .expect("a file of 1 to 10 MB in /usr/bin or /usr/lib")
}

/// A folder of this test's own under the temporary folder, removed at the
/// end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("parapipe-pgzip-{}-{test}", std::process::id()));
        fs::create_dir_all(&dir).expect("a scratch folder");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `/usr/bin/gzip -dc` on a file: what it writes, or why it failed.
fn gunzip(path: &Path) -> Result<Vec<u8>, String> {
    let out = Command::new("/usr/bin/gzip")
        .arg("-dc")
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run /usr/bin/gzip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gzip -dc {}: {}: {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

/// flate2's decoder of a single gzip member: it stops after the first
/// member, so it gives the whole input back only if the output is one.
fn inflate(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .expect("a valid gzip member");
    out
}

/// Compresses `input` to `output` with the pipeline and checks that both
/// decoders give the input back, and that the rayon variant wrote the same
/// bytes; returns the output.
fn round_trip(input: &Path, output: &Path, workers: usize) -> Vec<u8> {
    let data = fs::read(input).unwrap();
    let stats = pgzip::compress_file(input, output, pgzip::LEVEL, workers).unwrap();
    let gz = fs::read(output).unwrap();
    assert_eq!(stats.input, data.len() as u64);
    assert_eq!(stats.output, gz.len() as u64);
    let by_gzip = gunzip(output).unwrap();
    assert!(
        by_gzip == data,
        "gzip -dc gave back {} bytes, not the {} of {}",
        by_gzip.len(),
        data.len(),
        input.display()
    );
    assert!(
        inflate(&gz) == data,
        "flate2 did not give back {}",
        input.display()
    );
    let mut rayon = Vec::new();
    pgzip::compress_rayon(&data, &mut rayon, pgzip::LEVEL).unwrap();
    assert!(
        rayon == gz,
        "the rayon variant wrote other bytes for {}",
        input.display()
    );
    gz
}

#[test]
fn a_real_file_round_trips_through_gzip_and_flate2() {
    let scratch = Scratch::new("real");
    let input = real_file();
    let len = fs::metadata(&input).unwrap().len();
    assert!(
        len > 4 * pgzip::CHUNK as u64,
        "{} has several chunks",
        input.display()
    );
    let gz = round_trip(&input, &scratch.path("real.gz"), pgzip::WORKERS);
    // A real binary compresses; the chunks' dictionaries keep it close to
    // what one encoder over the whole file makes.
    assert!(
        (gz.len() as u64) < len,
        "{} did not shrink",
        input.display()
    );
    let mut single =
        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(pgzip::LEVEL));
    io::Write::write_all(&mut single, &fs::read(&input).unwrap()).unwrap();
    let single = single.finish().unwrap();
    assert!(
        gz.len() as f64 <= single.len() as f64 * 1.01,
        "{}: {} bytes in parallel, {} from one encoder",
        input.display(),
        gz.len(),
        single.len()
    );
}

#[test]
fn empty_short_and_chunk_sized_files_round_trip() {
    let scratch = Scratch::new("sizes");
    let real = fs::read(real_file()).unwrap();
    let chunk = pgzip::CHUNK;
    for len in [
        0,
        1,
        1000,
        chunk - 1,
        chunk,
        chunk + 1,
        2 * chunk,
        3 * chunk + 17,
    ] {
        assert!(len <= real.len());
        let input = scratch.path(&format!("prefix-{len}"));
        fs::write(&input, &real[..len]).unwrap();
        for workers in [1, 2, 3] {
            round_trip(
                &input,
                &scratch.path(&format!("prefix-{len}-{workers}.gz")),
                workers,
            );
        }
    }
}

#[test]
fn the_output_is_the_same_bytes_every_run_with_any_number_of_workers() {
    let scratch = Scratch::new("same");
    let input = real_file();
    let first = scratch.path("first.gz");
    pgzip::compress_file(&input, &first, pgzip::LEVEL, 2).unwrap();
    let first = fs::read(first).unwrap();
    for (run, workers) in [2, 2, 2, 1, 4].into_iter().enumerate() {
        let output = scratch.path(&format!("run-{run}.gz"));
        pgzip::compress_file(&input, &output, pgzip::LEVEL, workers).unwrap();
        assert!(
            fs::read(&output).unwrap() == first,
            "run {run} ({workers} workers) wrote other bytes"
        );
    }
}

#[test]
fn a_missing_or_unreadable_input_is_a_clear_error() {
    let scratch = Scratch::new("errors");
    let missing = scratch.path("no-such-file");
    let err = pgzip::compress_file(&missing, &scratch.path("out.gz"), pgzip::LEVEL, 2).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains("no-such-file"), "{err}");

    // A folder opens, but reading it fails: inside the pipeline, in its
    // source stage, whose name the error carries.
    let err = pgzip::compress_file(
        Path::new("/usr/bin"),
        &scratch.path("out.gz"),
        pgzip::LEVEL,
        2,
    )
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::IsADirectory, "{err}");
    assert!(err.to_string().contains("read_chunks"), "{err}");
    assert!(
        !scratch.path("out.gz").exists(),
        "the incomplete output is removed"
    );

    // An output that cannot be created names itself.
    let nowhere = scratch.path("no-such-folder/out.gz");
    let err = pgzip::compress_file(&real_file(), &nowhere, pgzip::LEVEL, 2).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains("no-such-folder"), "{err}");

    let err = pgzip::compress_file(&real_file(), &scratch.path("out.gz"), 10, 2).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
}
