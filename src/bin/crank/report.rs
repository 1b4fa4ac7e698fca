//! What training shows as it goes and after: the progress bar, the SVG curves, the last
//! epoch's metrics.

use crate::Result;
use crank::train::{Callback, Epoch, History};
use std::io::IsTerminal;
use std::path::Path;

/// A progress bar per epoch on a terminal; log lines otherwise.
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    epochs: usize,
    batch: usize,
    start: std::time::Instant,
    seen: f64,
}

impl Progress {
    pub(crate) fn new(epochs: usize, batch: usize) -> Self {
        Progress {
            bar: None,
            epochs,
            batch,
            start: std::time::Instant::now(),
            seen: 0.0,
        }
    }
}

impl Callback for Progress {
    fn on_batch_end(&mut self, epoch: usize, batch: usize, batches: usize, loss: f64) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        if batch == 1 {
            let bar = indicatif::ProgressBar::new(batches as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{}", self.epochs));
            self.bar = Some(bar);
            self.start = std::time::Instant::now();
            self.seen = 0.0;
        }
        self.seen += self.batch as f64;
        if let Some(bar) = &self.bar {
            bar.set_position(batch as u64);
            let speed = self.seen / self.start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {loss:.4}  {speed:.0} samples/s"));
        }
    }

    fn on_epoch_end(&mut self, record: &Epoch) {
        let metrics: Vec<String> = record
            .metrics
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        let line = format!(
            "epoch {}/{}: {} ({:.2} s)",
            record.epoch,
            self.epochs,
            metrics.join(", "),
            record.seconds
        );
        match self.bar.take() {
            Some(bar) => bar.finish_with_message(metrics.join(", ")),
            None => eprintln!("{line}"),
        }
    }
}

pub(crate) fn plot(history: &History, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (960, 400)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((1, 2));
        let epochs = history.epochs.len().max(2) as f64;
        for (area, (title, names)) in panels.iter().zip([
            ("loss", ["loss", "val_loss"]),
            ("accuracy", ["accuracy", "val_accuracy"]),
        ]) {
            let series: Vec<(&str, Vec<(f64, f64)>)> = names
                .iter()
                .map(|n| {
                    let pts = history
                        .column(n)
                        .into_iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(i, v)| (i as f64 + 1.0, v))
                        .collect();
                    (*n, pts)
                })
                .collect();
            let values: Vec<f64> = series
                .iter()
                .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
                .collect();
            if values.is_empty() {
                continue;
            }
            let (lo, hi) = values
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let pad = ((hi - lo) * 0.05).max(1e-6);
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(1.0..epochs, (lo - pad)..(hi + pad))?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(title)
                .draw()?;
            for ((name, pts), color) in series.into_iter().zip([BLUE, RED]) {
                if !pts.is_empty() {
                    chart
                        .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                        .label(if name.starts_with("val_") {
                            "validation"
                        } else {
                            "training"
                        })
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                        });
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| format!("{}: {e}", path.display()))
}

/// The last epoch's metrics, `loss 0.1234, accuracy 0.9700`.
pub(crate) fn last_metrics(h: &History) -> String {
    h.epochs
        .last()
        .map(|e| {
            e.metrics
                .iter()
                .map(|(k, v)| format!("{k} {v:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}
