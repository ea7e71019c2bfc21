//! TensorBoard output, through `tensorboard-rs` (one writer per run).
//!
//! Why a wrapper: tensorboard-rs 0.5.9 writes scalars and raw histograms, but `add_hparams`,
//! `add_text` and `add_histogram` are `unimplemented!()`. Text and the HPARAMS session are
//! written here as raw summaries with `tensorboard-proto` types, and histograms are bucketed
//! here. Its `FileWriter` also cannot fail: its writer thread panics on a write error (a full
//! disk then kills the whole run with a panic and loses the summary and checkpoint) and it names
//! files by the second, so two writers in one second share a file. So the event file itself is
//! written here, with tensorboard-rs's `RecordWriter` (the TFRecord framing) over a file created
//! with `create_new`: a failed write is kept as an error naming the file, later writes are
//! skipped, and the run stops cleanly with that error. Every tag the project writes is listed in
//! [`TAGS`] (and in docs/ARCHITECTURE.md, which a test keeps in sync).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use protobuf::well_known_types::Value;
use protobuf::{Message, RepeatedField};
use tensorboard_proto::api::{Experiment, HParamInfo, MetricInfo, MetricName};
use tensorboard_proto::event::Event;
use tensorboard_proto::plugin_hparams::{HParamsPluginData, SessionEndInfo, SessionStartInfo};
use tensorboard_proto::summary::{Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Value};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::types::DataType;
use tensorboard_rs::record_writer::RecordWriter;

/// Every tag wndqn writes, with its meaning. The x-axis is always env steps (all actors).
pub const TAGS: &[(&str, &str)] = &[
    ("charts/episodic_return", "whole-game return (all lives, unclipped rewards) of each finished training episode"),
    ("charts/episodic_length", "env steps of each finished training episode"),
    ("charts/epsilon", "exploration epsilon of the shared schedule (Ape-X: actor 0's)"),
    ("charts/sps", "env steps per second over the last logging interval"),
    ("losses/td_loss", "TD loss (Huber or MSE), mean over the updates of the interval"),
    ("losses/q_values", "mean Q(s, a) of the sampled batches over the interval"),
    ("learner/updates_per_sec", "learner updates per second over the interval"),
    ("learner/grad_norm", "global gradient L2 norm before clipping, mean over the interval"),
    ("learner/updates", "learner updates done so far"),
    ("replay/size", "transitions stored in the replay memory"),
    ("weight_norm/g_mean/<layer>", "mean of the weight-norm scales g of a layer (weight-norm variants only)"),
    ("weight_norm/g/<layer>", "histogram of the weight-norm scales g of a layer"),
    ("diag/weight_norm/<layer>", "||W|| (Frobenius) of the weight a layer's optimizer moves: W, or weight norm's v (every log.diagnostics_every updates)"),
    ("diag/relative_update/<layer>", "||W - W_prev|| / ||W_prev|| since the previous diagnostic: the effective step size"),
    ("diag/g_mean/<layer>", "mean of weight norm's scales g of a layer (weight-norm layers)"),
    ("diag/sigma/<layer>", "spectral norm's estimate sigma = u . W v of a layer's largest singular value (spectral layers)"),
    ("diag/dormant_fraction", "fraction of the penultimate layer's units that are dormant on the probe batch (Sokar et al. 2023, tau 0.025)"),
    ("diag/feature_rank", "effective rank srank of the penultimate layer's features on the probe batch (Kumar et al. 2021, delta 0.01)"),
    ("eval/episodic_return", "mean whole-game return of the periodic greedy evaluation"),
    ("eval/episodic_return_std", "standard deviation of those returns"),
    ("config", "text: the resolved config.toml of the run"),
    ("learner/warnings", "text: what the learner warned about (a CUDA-graph update that did not match the eager one, a failed capture)"),
    ("score/final", "the run's final score (mean return of the training games in the last 10% of its env steps), once, when it reaches its budget: the HPARAMS tab's metric"),
    ("_hparams_/session_start_info", "HPARAMS tab: the run's hyper-parameters, every config key (`agent.lr`, `agent.variant`, ...)"),
    ("_hparams_/experiment", "HPARAMS tab of a sweep folder: which keys and metric its table shows (the sweep's games, variants, seeds and grid axes; `score/final`)"),
];

/// Whether `tag` is one of [`TAGS`] (`<layer>` stands for any layer name).
pub fn is_documented(tag: &str) -> bool {
    TAGS.iter().any(|(t, _)| match t.strip_suffix("<layer>") {
        Some(prefix) => tag.starts_with(prefix),
        None => *t == tag,
    })
}

use crate::util::unix_now as unix_secs;

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer and its length; gethostname NUL-terminates what fits.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let name = if ok {
        std::ffi::CStr::from_bytes_until_nul(&buf).map(|c| c.to_string_lossy().into_owned()).unwrap_or_default()
    } else {
        String::new()
    };
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// The run's event file.
pub struct Board {
    w: RecordWriter<BufWriter<File>>,
    path: PathBuf,
    /// The first write error; once set, nothing more is written.
    error: Option<std::io::Error>,
}

impl Board {
    /// Create a new event file in `dir` (which must exist), named as TensorBoard expects
    /// (`events.out.tfevents.{secs}.{host}.{pid}.{k}`), never reusing an existing name.
    pub fn new(dir: &Path) -> Result<Board> {
        let (secs, host, pid) = (unix_secs(), hostname(), std::process::id());
        for k in 0..1000 {
            let path = dir.join(format!("events.out.tfevents.{:010}.{host}.{pid}.{k}", secs as u64));
            match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => {
                    let mut b = Board { w: RecordWriter::new(BufWriter::with_capacity(1 << 16, f)), path, error: None };
                    let mut e = Event::new();
                    e.set_wall_time(secs);
                    e.set_file_version("brain.Event:2".into());
                    b.write_event(e);
                    b.flush();
                    b.check()?;
                    return Ok(b);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
            }
        }
        Err(anyhow!("no free event file name in {}", dir.display()))
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first write error, naming the file.
    pub fn check(&self) -> Result<()> {
        match &self.error {
            None => Ok(()),
            Some(e) => Err(anyhow!("writing {}: {e}", self.path.display())),
        }
    }

    fn write_event(&mut self, e: Event) {
        if self.error.is_some() {
            return;
        }
        match e.write_to_bytes() {
            Ok(bytes) => {
                if let Err(err) = self.w.write(&bytes) {
                    self.error = Some(err);
                }
            }
            Err(err) => self.error = Some(std::io::Error::other(err.to_string())),
        }
    }

    fn write_summary(&mut self, s: Summary, step: u64) {
        let mut e = Event::new();
        e.set_wall_time(unix_secs());
        e.set_step(step as i64);
        e.set_summary(s);
        self.write_event(e);
    }

    /// A scalar at `step`.
    pub fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        debug_assert!(is_documented(tag), "undocumented TensorBoard tag {tag}");
        self.write_summary(tensorboard_rs::summary::scalar(tag, value as f32), step);
    }

    /// A histogram of `values` (30 equal-width buckets between min and max).
    pub fn histogram(&mut self, tag: &str, values: &[f32], step: u64) {
        debug_assert!(is_documented(tag), "undocumented TensorBoard tag {tag}");
        if values.is_empty() {
            return;
        }
        let min = values.iter().copied().fold(f32::INFINITY, f32::min) as f64;
        let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let n = 30;
        let width = ((max - min) / n as f64).max(1e-12);
        let limits: Vec<f64> = (1..=n).map(|i| min + width * i as f64).collect();
        let mut counts = vec![0f64; n];
        for &v in values {
            let i = (((v as f64 - min) / width) as usize).min(n - 1);
            counts[i] += 1.0;
        }
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        let sq: f64 = values.iter().map(|&v| (v as f64).powi(2)).sum();
        let s = tensorboard_rs::summary::histogram_raw(tag, min, max, values.len() as f64, sum, sq, &limits, &counts);
        self.write_summary(s, step);
    }

    fn plugin_value(tag: &str, plugin: &str, content: Vec<u8>) -> Summary_Value {
        let mut pd = SummaryMetadata_PluginData::new();
        pd.set_plugin_name(plugin.to_string());
        pd.set_content(content);
        let mut md = SummaryMetadata::new();
        md.set_plugin_data(pd);
        let mut v = Summary_Value::new();
        v.set_tag(tag.to_string());
        v.set_metadata(md);
        v
    }

    fn write_values(&mut self, values: Vec<Summary_Value>, step: u64) {
        let mut s = Summary::new();
        s.set_value(RepeatedField::from(values));
        self.write_summary(s, step);
    }

    /// A text summary (markdown), shown in TensorBoard's TEXT tab.
    pub fn text(&mut self, tag: &str, markdown: &str, step: u64) {
        debug_assert!(is_documented(tag), "undocumented TensorBoard tag {tag}");
        let mut v = Self::plugin_value(tag, "text", Vec::new());
        let mut t = TensorProto::new();
        t.set_dtype(DataType::DT_STRING);
        t.set_string_val(RepeatedField::from(vec![markdown.as_bytes().to_vec()]));
        v.set_tensor(t);
        self.write_values(vec![v], step);
    }

    /// The HPARAMS session start: one per run, in the run's own event file.
    pub fn hparams(&mut self, group: &str, params: &[(String, HParam)], start_time_secs: f64) {
        let mut info = SessionStartInfo::new();
        let mut map = HashMap::new();
        for (k, p) in params {
            map.insert(k.clone(), p.value());
        }
        info.set_hparams(map);
        info.set_group_name(group.to_string());
        info.set_start_time_secs(start_time_secs);
        let mut data = HParamsPluginData::new();
        data.set_version(0);
        data.set_session_start_info(info);
        let bytes = data.write_to_bytes().expect("hparams proto serializes");
        let v = Self::plugin_value("_hparams_/session_start_info", "hparams", bytes);
        self.write_values(vec![v], 0);
    }

    /// The HPARAMS experiment of a folder of runs: the hyper-parameters its table shows, each
    /// with the values it takes, and the scalar tags shown as metrics.
    pub fn experiment(&mut self, params: &[(String, Vec<HParam>)], metrics: &[&str]) {
        let mut e = Experiment::new();
        for (name, values) in params {
            let mut info = HParamInfo::new();
            info.set_name(name.clone());
            let kind = match values.first() {
                Some(HParam::Num(_)) => tensorboard_proto::api::DataType::DATA_TYPE_FLOAT64,
                Some(HParam::Bool(_)) => tensorboard_proto::api::DataType::DATA_TYPE_BOOL,
                _ => tensorboard_proto::api::DataType::DATA_TYPE_STRING,
            };
            info.set_field_type(kind);
            let mut list = protobuf::well_known_types::ListValue::new();
            list.set_values(RepeatedField::from(values.iter().map(HParam::value).collect::<Vec<_>>()));
            info.set_domain_discrete(list);
            e.mut_hparam_infos().push(info);
        }
        for m in metrics {
            debug_assert!(is_documented(m), "undocumented TensorBoard tag {m}");
            let mut name = MetricName::new();
            name.set_tag(m.to_string());
            let mut info = MetricInfo::new();
            info.set_name(name);
            info.set_display_name(m.to_string());
            e.mut_metric_infos().push(info);
        }
        e.set_time_created_secs(unix_secs());
        let mut data = HParamsPluginData::new();
        data.set_version(0);
        data.set_experiment(e);
        let bytes = data.write_to_bytes().expect("hparams proto serializes");
        let v = Self::plugin_value("_hparams_/experiment", "hparams", bytes);
        self.write_values(vec![v], 0);
    }

    /// The HPARAMS session end (status success).
    pub fn hparams_end(&mut self, end_time_secs: f64, step: u64) {
        let mut info = SessionEndInfo::new();
        info.set_status(tensorboard_proto::api::Status::STATUS_SUCCESS);
        info.set_end_time_secs(end_time_secs);
        let mut data = HParamsPluginData::new();
        data.set_version(0);
        data.set_session_end_info(info);
        let bytes = data.write_to_bytes().expect("hparams proto serializes");
        let v = Self::plugin_value("_hparams_/session_end_info", "hparams", bytes);
        self.write_values(vec![v], step);
    }

    /// Push buffered events to the file.
    pub fn flush(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.w.flush() {
                self.error = Some(e);
            }
        }
    }
}

/// One hyper-parameter value.
#[derive(Debug, Clone)]
pub enum HParam {
    /// A number.
    Num(f64),
    /// A string.
    Str(String),
    /// A flag.
    Bool(bool),
}

impl HParam {
    /// A TOML value as a hyper-parameter (an array as its text).
    pub fn from_toml(v: &toml::Value) -> HParam {
        match v {
            toml::Value::Float(x) => HParam::Num(*x),
            toml::Value::Integer(i) => HParam::Num(*i as f64),
            toml::Value::Boolean(b) => HParam::Bool(*b),
            toml::Value::String(s) => HParam::Str(s.clone()),
            other => HParam::Str(other.to_string()),
        }
    }

    fn value(&self) -> Value {
        let mut v = Value::new();
        match self {
            HParam::Num(x) => v.set_number_value(*x),
            HParam::Str(s) => v.set_string_value(s.clone()),
            HParam::Bool(b) => v.set_bool_value(*b),
        }
        v
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tag_table_lists_exactly_the_tags() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ARCHITECTURE.md")).unwrap();
        let tags: std::collections::BTreeSet<String> = super::TAGS.iter().map(|(t, _)| t.to_string()).collect();
        assert_eq!(crate::util::markdown_table_keys(&doc), tags, "docs/ARCHITECTURE.md's tag table and TAGS differ");
    }
}
