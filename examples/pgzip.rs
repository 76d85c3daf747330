//! Parallel gzip, as pigz does it: a real file read in 128 KiB chunks,
//! each chunk compressed on a worker, the chunks written in order as one
//! gzip stream that `gzip -dc` turns back into the file.
//!
//! ```sh
//! cargo run --release --example pgzip                       # the largest librustc_driver-*.so of the toolchain
//! cargo run --release --example pgzip -- INPUT [OUTPUT [LEVEL]] [--workers=N] [--rayon]
//! ```
//!
//! The output defaults to `<input file name>.gz` in the temporary folder,
//! the level to 6. It prints the sizes, the time, the throughput and the
//! process's peak memory (`VmHWM`).
//!
//! The pipeline is `read_chunks | deflate`: a producer stage reads the file
//! a chunk at a time (never the whole file), an ordered map stage with 2
//! workers compresses the chunks, and the consumer writes them as they come,
//! in input order. The queues hold a few chunks each, so memory stays a few
//! megabytes whatever the file's size.
//!
//! # The format: one gzip member, as pigz writes it
//!
//! The output is one gzip member: a header, then every chunk's raw deflate
//! blocks, then a trailer with the CRC32 and length of the whole input. A
//! chunk's compressor ends with a *sync flush* (an empty stored block that
//! ends on a byte boundary, without the final-block bit), the last chunk's
//! with a finish, so the chunks' outputs simply concatenate into one
//! deflate stream. Each worker computes its chunk's CRC32, and the consumer
//! combines them in order (`flate2::Crc::combine`).
//!
//! Why this rather than one gzip member per chunk (which `gzip -dc` also
//! accepts): each chunk's compressor is given the last 32 KiB of the chunk
//! before as its dictionary (deflate's whole window), so matches reach back
//! across the chunk boundary and the output is about as small as a
//! single-threaded gzip's; separate members would restart the window at
//! every chunk and add 18 bytes of header and trailer each. One member is
//! also what every gzip reader handles, including the ones that stop after
//! the first member.
//!
//! The output depends only on the input and the level: the same bytes from
//! run to run, whatever the scheduling. `tests/pgzip.rs` checks that, and
//! that `gzip -dc` and flate2 give the input back; `benches/pgzip.rs`
//! measures this beside rayon, a single-threaded encoder and `pigz -p 2`.
//!
//! With `--rayon`, the same compression is done rayon's obvious way instead
//! (the whole file read into memory, `par_chunks`, every chunk's output
//! collected before writing), for the comparison of peak memory.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Instant;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use parapipe::prelude::*;
use rayon::prelude::*;

/// The size of a chunk, the unit of work of a worker.
pub const CHUNK: usize = 128 * 1024;
/// Deflate's window: how much of the chunk before a chunk's compressor is
/// given as its dictionary.
pub const DICT: usize = 32 * 1024;
/// The default compression level, gzip's.
pub const LEVEL: u32 = 6;
/// The default number of compressing workers.
pub const WORKERS: usize = 2;
/// Items queued after each stage: chunks are 128 KiB, so a few are enough
/// to keep the workers busy, and memory stays small.
const QSIZE: usize = 4;

/// A chunk of the input, with what its compressor needs of the one before.
#[derive(Debug)]
pub struct Chunk {
    /// At most [`CHUNK`] bytes of the input.
    pub data: Vec<u8>,
    /// The last [`DICT`] bytes of the chunk before (empty for the first).
    pub dict: Vec<u8>,
    /// Whether this is the input's last chunk (an empty input has one,
    /// empty, chunk).
    pub last: bool,
}

/// A chunk compressed.
#[derive(Debug)]
pub struct Deflated {
    /// Raw deflate blocks, ending with a sync flush, or with the final
    /// block for the last chunk.
    pub bytes: Vec<u8>,
    /// The CRC32 of the chunk's input bytes, and their number.
    pub crc: Crc,
    /// Whether this is the last chunk.
    pub last: bool,
}

/// What a compression read and wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Bytes read.
    pub input: u64,
    /// Bytes written, header and trailer included.
    pub output: u64,
}

/// The source: reads `file` in chunks of `size` bytes, one chunk ahead
/// (to know which is the last). One worker only: two would share the file's
/// position.
#[stage(producer, qsize = QSIZE)]
pub fn read_chunks(file: Arc<File>, size: usize) -> impl Iterator<Item = io::Result<Chunk>> {
    Chunks::new(file, size)
}

/// Compresses one chunk, on `WORKERS` workers, its output in input order.
#[map_stage(workers = WORKERS, qsize = QSIZE, ordered)]
pub fn deflate(chunk: Chunk, level: u32) -> io::Result<Deflated> {
    deflate_chunk(&chunk.data, &chunk.dict, chunk.last, level)
}

/// Reads a reader in chunks of `size` bytes (the last may be shorter),
/// keeping one chunk read ahead; a read error ends it.
#[derive(Debug)]
pub struct Chunks<R> {
    reader: R,
    size: usize,
    ahead: Option<Vec<u8>>,
    /// The tail of the chunk last returned: the next one's dictionary.
    dict: Vec<u8>,
    done: bool,
}

impl<R: Read> Chunks<R> {
    /// Chunks of `size` (at least 1) bytes read from `reader`.
    pub fn new(reader: R, size: usize) -> Self {
        Chunks {
            reader,
            size: size.max(1),
            ahead: None,
            dict: Vec::new(),
            done: false,
        }
    }

    /// Up to `size` bytes: fewer only at the end of the input.
    fn read_chunk(&mut self) -> io::Result<Vec<u8>> {
        let mut data = Vec::with_capacity(self.size);
        (&mut self.reader)
            .take(self.size as u64)
            .read_to_end(&mut data)?;
        Ok(data)
    }

    fn advance(&mut self) -> io::Result<Chunk> {
        let data = match self.ahead.take() {
            Some(data) => data,
            None => self.read_chunk()?,
        };
        // A short chunk ends the input; after a full one, read the next to
        // see whether there is one.
        let last = data.len() < self.size || {
            let next = self.read_chunk()?;
            let end = next.is_empty();
            self.ahead = (!end).then_some(next);
            end
        };
        let tail = data[data.len().saturating_sub(DICT)..].to_vec();
        let dict = std::mem::replace(&mut self.dict, tail);
        Ok(Chunk { data, dict, last })
    }
}

impl<R: Read> Iterator for Chunks<R> {
    type Item = io::Result<Chunk>;

    fn next(&mut self) -> Option<io::Result<Chunk>> {
        if self.done {
            return None;
        }
        let chunk = self.advance();
        self.done = chunk.as_ref().map_or(true, |c| c.last);
        Some(chunk)
    }
}

/// Compresses `data` to raw deflate blocks at `level`, with `dict` (the
/// input just before it) as the dictionary: ended by a sync flush, or by
/// the final block if `last`. Concatenated in order, the outputs of an
/// input's chunks are one deflate stream.
pub fn deflate_chunk(data: &[u8], dict: &[u8], last: bool, level: u32) -> io::Result<Deflated> {
    let mut crc = Crc::new();
    crc.update(data);
    let mut z = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        z.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut bytes = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        let read = usize::try_from(z.total_in()).map_err(io::Error::other)?;
        let status = z
            .compress_vec(&data[read..], &mut bytes, flush)
            .map_err(io::Error::other)?;
        // A sync flush is complete once all the input is in and the
        // compressor left room in the output; a finish, at the stream's end.
        let done = match status {
            Status::StreamEnd => true,
            Status::Ok | Status::BufError => {
                !last && z.total_in() == data.len() as u64 && bytes.len() < bytes.capacity()
            }
        };
        if done {
            break;
        }
        bytes.reserve(bytes.len().max(1024));
    }
    bytes.shrink_to_fit();
    Ok(Deflated { bytes, crc, last })
}

/// Writes one gzip member from compressed chunks given in order: the
/// header first, each chunk's blocks, and, in [`finish`](GzipWriter::finish),
/// the trailer with the CRC32 of all the chunks.
#[derive(Debug)]
pub struct GzipWriter<W: Write> {
    out: W,
    crc: Crc,
    stats: Stats,
    ended: bool,
}

impl<W: Write> GzipWriter<W> {
    /// Writes the header of a member compressed at `level`.
    pub fn new(mut out: W, level: u32) -> io::Result<Self> {
        // RFC 1952: magic, deflate, no flags, no time, the extra flags
        // gzip sets for its slowest and fastest levels, OS Unix.
        let xfl = match level {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        let header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3];
        out.write_all(&header)?;
        Ok(GzipWriter {
            out,
            crc: Crc::new(),
            stats: Stats {
                input: 0,
                output: header.len() as u64,
            },
            ended: false,
        })
    }

    /// Writes the next chunk.
    pub fn write_chunk(&mut self, chunk: &Deflated) -> io::Result<()> {
        if self.ended {
            return Err(io::Error::other("a chunk after the last one"));
        }
        self.out.write_all(&chunk.bytes)?;
        self.crc.combine(&chunk.crc);
        self.stats.input += u64::from(chunk.crc.amount());
        self.stats.output += chunk.bytes.len() as u64;
        self.ended = chunk.last;
        Ok(())
    }

    /// Writes the trailer and flushes; an error if the last chunk is
    /// missing.
    pub fn finish(mut self) -> io::Result<Stats> {
        if !self.ended {
            return Err(io::Error::other("the input ended without its last chunk"));
        }
        // The length modulo 2^32, as RFC 1952 has it.
        let isize = (self.stats.input as u32).to_le_bytes();
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&isize)?;
        self.out.flush()?;
        self.stats.output += 8;
        Ok(self.stats)
    }
}

/// Compresses `input` into `out` as one gzip member at `level` (0 to 9),
/// with `workers` compressing workers: the parapipe pipeline.
pub fn compress<W: Write>(input: File, out: W, level: u32, workers: usize) -> io::Result<Stats> {
    check_level(level)?;
    let mut gzip = GzipWriter::new(out, level)?;
    let chunks = read_chunks::new(Arc::new(input), CHUNK);
    for chunk in pipe!(chunks | deflate(level).workers(workers)).results() {
        gzip.write_chunk(&chunk.map_err(io::Error::from)?)?;
    }
    gzip.finish()
}

/// The same output as [`compress`], made rayon's obvious way: `data` (the
/// whole input, in memory) in parallel chunks, every chunk's output
/// collected, then written in order.
pub fn compress_rayon<W: Write>(data: &[u8], out: W, level: u32) -> io::Result<Stats> {
    check_level(level)?;
    let last = data.len().div_ceil(CHUNK).saturating_sub(1);
    let mut chunks: Vec<Deflated> = data
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(i, chunk)| {
            let start = i * CHUNK;
            let dict = &data[start.saturating_sub(DICT)..start];
            deflate_chunk(chunk, dict, i == last, level)
        })
        .collect::<io::Result<_>>()?;
    if data.is_empty() {
        chunks.push(deflate_chunk(&[], &[], true, level)?);
    }
    let mut gzip = GzipWriter::new(out, level)?;
    for chunk in &chunks {
        gzip.write_chunk(chunk)?;
    }
    gzip.finish()
}

/// Compresses the file `input` into the file `output` with [`compress`];
/// errors name the file, and remove the incomplete output.
pub fn compress_file(input: &Path, output: &Path, level: u32, workers: usize) -> io::Result<Stats> {
    check_level(level)?;
    let file = File::open(input).map_err(|e| about(input, "cannot read", e))?;
    let out = File::create(output).map_err(|e| about(output, "cannot create", e))?;
    compress(file, BufWriter::new(out), level, workers).map_err(|e| {
        let _ = fs::remove_file(output);
        about(input, "cannot compress", e)
    })
}

/// Compresses the file `input` into the file `output` with
/// [`compress_rayon`], reading the whole file first; errors name the file,
/// and remove the incomplete output.
pub fn compress_file_rayon(input: &Path, output: &Path, level: u32) -> io::Result<Stats> {
    check_level(level)?;
    let data = fs::read(input).map_err(|e| about(input, "cannot read", e))?;
    let out = File::create(output).map_err(|e| about(output, "cannot create", e))?;
    compress_rayon(&data, BufWriter::new(out), level).map_err(|e| {
        let _ = fs::remove_file(output);
        about(input, "cannot compress", e)
    })
}

fn check_level(level: u32) -> io::Result<()> {
    if level > 9 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("compression level {level}: levels go from 0 to 9"),
        ));
    }
    Ok(())
}

fn about(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// The largest `librustc_driver-*.so` of the toolchain that `rustc` (or
/// `$RUSTC`) runs: a real, large file on any machine that builds this.
pub fn default_input() -> io::Result<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run rustc --print sysroot: {e}")))?;
    let lib = Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("lib");
    let mut largest: Option<(u64, PathBuf)> = None;
    for entry in fs::read_dir(&lib).map_err(|e| about(&lib, "cannot list", e))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("librustc_driver-") && name.ends_with(".so") {
            let len = entry.metadata()?.len();
            if largest.as_ref().is_none_or(|(l, _)| len > *l) {
                largest = Some((len, entry.path()));
            }
        }
    }
    largest.map(|(_, path)| path).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no librustc_driver-*.so in {}: give a file to compress",
                lib.display()
            ),
        )
    })
}

/// The process's peak resident memory (`VmHWM` in `/proc/self/status`), in
/// KiB, where the system reports it.
pub fn peak_memory_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The command line: `[INPUT [OUTPUT [LEVEL]]] [--workers=N] [--rayon]`.
#[derive(Debug)]
struct Args {
    input: PathBuf,
    output: PathBuf,
    level: u32,
    workers: usize,
    rayon: bool,
}

fn parse_args() -> Result<Args, String> {
    let (mut positional, mut workers, mut rayon) = (Vec::new(), WORKERS, false);
    for arg in std::env::args().skip(1) {
        if arg == "--rayon" {
            rayon = true;
        } else if let Some(n) = arg.strip_prefix("--workers=") {
            workers = n
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or(format!("--workers={n}: a number of workers, at least 1"))?;
        } else if arg.starts_with("--") || positional.len() == 3 {
            return Err(format!(
                "unexpected argument {arg:?}; usage: pgzip [INPUT [OUTPUT [LEVEL]]] [--workers=N] [--rayon]"
            ));
        } else {
            positional.push(arg);
        }
    }
    let mut positional = positional.into_iter();
    let input = match positional.next() {
        Some(path) => PathBuf::from(path),
        None => default_input().map_err(|e| e.to_string())?,
    };
    let output = match positional.next() {
        Some(path) => PathBuf::from(path),
        None => {
            let mut name = input.file_name().unwrap_or(input.as_os_str()).to_owned();
            name.push(".gz");
            std::env::temp_dir().join(name)
        }
    };
    let level = match positional.next() {
        Some(level) => level
            .parse()
            .ok()
            .filter(|&l| l <= 9)
            .ok_or(format!("level {level:?}: a number from 0 to 9"))?,
        None => LEVEL,
    };
    Ok(Args {
        input,
        output,
        level,
        workers,
        rayon,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("pgzip: {e}");
            return ExitCode::from(2);
        }
    };
    let start = Instant::now();
    let (how, stats) = if args.rayon {
        let how = "rayon (whole file in memory)".to_owned();
        (
            how,
            compress_file_rayon(&args.input, &args.output, args.level),
        )
    } else {
        let plural = if args.workers == 1 { "" } else { "s" };
        let how = format!("parapipe, {} worker{plural}", args.workers);
        (
            how,
            compress_file(&args.input, &args.output, args.level, args.workers),
        )
    };
    let stats = match stats {
        Ok(stats) => stats,
        Err(e) => {
            eprintln!("pgzip: {e}");
            return ExitCode::FAILURE;
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let mb = |bytes: u64| bytes as f64 / 1e6;
    println!(
        "input:  {} ({:.1} MB)",
        args.input.display(),
        mb(stats.input)
    );
    println!(
        "output: {} ({:.1} MB, {:.1}% of the input)",
        args.output.display(),
        mb(stats.output),
        100.0 * stats.output as f64 / stats.input.max(1) as f64
    );
    println!(
        "{how}, level {}: {seconds:.2} s, {:.1} MB/s",
        args.level,
        mb(stats.input) / seconds
    );
    match peak_memory_kib() {
        Some(kib) => println!(
            "peak memory (VmHWM): {kib} kB ({:.1} MiB)",
            kib as f64 / 1024.0
        ),
        None => println!("peak memory: not reported by this system"),
    }
    ExitCode::SUCCESS
}
