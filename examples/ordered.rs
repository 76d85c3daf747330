//! Ordered output: Mandelbrot rows computed on several workers (rows differ
//! a lot in cost) but printed top to bottom, as ASCII art, through built-in
//! closure stages.
//!
//! Run with `cargo run --release --example ordered`.

use parapipe::prelude::*;
use parapipe::stages;

const WIDTH: usize = 78;
const HEIGHT: usize = 32;
const MAX_ITER: u32 = 2000;

/// One row of the set: the iteration count at which each point escaped.
#[map_stage(workers = 4, ordered)]
fn row(y: usize) -> Vec<u32> {
    let ci = (y as f64 / HEIGHT as f64) * 2.4 - 1.2;
    (0..WIDTH)
        .map(|x| {
            let cr = (x as f64 / WIDTH as f64) * 3.5 - 2.5;
            let (mut zr, mut zi, mut n) = (0.0f64, 0.0f64, 0);
            while n < MAX_ITER && zr * zr + zi * zi <= 4.0 {
                (zr, zi) = (zr * zr - zi * zi + cr, 2.0 * zr * zi + ci);
                n += 1;
            }
            n
        })
        .collect()
}

fn main() -> Result<(), PipelineError> {
    let shades = b" .:-=+*#%@";
    let lines: Vec<String> = pipe!(
        0..HEIGHT
            | row
            | stages::map(move |counts: Vec<u32>| {
                counts
                    .iter()
                    .map(|&n| match n {
                        MAX_ITER => '@',
                        n => shades[(n as usize * 7 / 50).min(shades.len() - 2)] as char,
                    })
                    .collect::<String>()
            })
            .ordered(true)
    )
    .collect()?;
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
