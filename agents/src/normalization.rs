//! Normalization of a Q-network, as one concept: the variants a user names ([`Variant`]), and
//! the one breakdown of each into what its layers do ([`Recipe`]): a weight's parameterization
//! ([`Param`]: plain, weight norm with or without mean-only batch norm, spectral norm), layer
//! norm on hidden pre-activations, weight norm's projection, the data-dependent init.
//!
//! Each normalization's layer code lives in a file of its own under [`crate::layers`]
//! (`weight_norm.rs`, `spectral.rs`, `layer_norm.rs`, `mean_only_bn.rs`).

use serde::{Deserialize, Serialize};

/// Network parameterization and initialization, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "snake_case"))]
pub enum Variant {
    /// Standard parameterization and PyTorch's default init.
    Plain,
    /// Weight norm with the data-dependent init (the paper's method).
    WeightNorm,
    /// Weight norm, no data-dependent init.
    WeightNormNoinit,
    /// Weight norm, data-dependent init, mean-only batch norm.
    WeightNormMobn,
    /// Plain weights, layer norm before every hidden nonlinearity.
    LayerNorm,
    /// Spectral norm on the layers [`NormOptions::spectral_layers`] names, plain elsewhere.
    SpectralNorm,
    /// Weight norm, data-dependent init, every `||v||` kept at its initial value.
    WeightNormProjected,
}

/// Where spectral norm goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpectralLayers {
    /// The hidden dense layer(s) feeding the output (Gogianu et al. 2021).
    #[default]
    Penultimate,
    /// Every layer, the output layer included.
    All,
}

impl SpectralLayers {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            SpectralLayers::Penultimate => "penultimate",
            SpectralLayers::All => "all",
        }
    }
}

/// Settings of the normalizations that have any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NormOptions {
    /// What a convolution's layer norm normalizes over (`layer_norm`).
    pub layer_norm_axes: LayerNormAxes,
    /// Which layers are spectrally normalized (`spectral_norm`).
    pub spectral_layers: SpectralLayers,
}

impl Variant {
    /// Every variant.
    pub const ALL: [Variant; 7] = [
        Variant::Plain,
        Variant::WeightNorm,
        Variant::WeightNormNoinit,
        Variant::WeightNormMobn,
        Variant::LayerNorm,
        Variant::SpectralNorm,
        Variant::WeightNormProjected,
    ];

    /// The config/CLI name (`weight_norm`).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::WeightNorm => "weight_norm",
            Variant::WeightNormNoinit => "weight_norm_noinit",
            Variant::WeightNormMobn => "weight_norm_mobn",
            Variant::LayerNorm => "layer_norm",
            Variant::SpectralNorm => "spectral_norm",
            Variant::WeightNormProjected => "weight_norm_projected",
        }
    }

    /// Parse a name.
    pub fn from_name(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s)
    }

    /// What the variant does to a network ([`Recipe`]): the one place a variant is taken apart.
    /// An eighth normalization gets its row here, its name above, and its layer code in a file
    /// of its own under `layers/` (docs/METHOD.md, "Adding a normalization").
    pub fn recipe(self) -> Recipe {
        let wn = |mean_only_bn| Param::WeightNorm { mean_only_bn };
        let (param, layer_norm, projected, data_init) = match self {
            Variant::Plain => (Param::Plain, false, false, false),
            Variant::WeightNorm => (wn(false), false, false, true),
            Variant::WeightNormNoinit => (wn(false), false, false, false),
            Variant::WeightNormMobn => (wn(true), false, false, true),
            Variant::LayerNorm => (Param::Plain, true, false, false),
            Variant::SpectralNorm => (Param::Spectral, false, false, false),
            Variant::WeightNormProjected => (wn(false), false, true, true),
        };
        Recipe { param, layer_norm, projected, data_init }
    }

    /// Whether the variant runs the data-dependent init before learning.
    pub fn data_init(self) -> bool {
        self.recipe().data_init
    }
}

/// What a [`Variant`] does, layer by layer: how every weight is parameterized, whether hidden
/// layers end in layer norm, whether weight norm keeps its norms, whether the data-dependent init
/// runs. [`crate::qnet::QNetwork`] builds its layers from it, [`crate::dqn::Dqn`] and the
/// training runner ask it instead of comparing variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipe {
    /// The parameterization of every weighted layer (spectral norm: where
    /// [`NormOptions::spectral_layers`] says; plain elsewhere).
    pub param: Param,
    /// Layer norm before every hidden nonlinearity (on its pre-activation).
    pub layer_norm: bool,
    /// Weight norm with every row of `v` kept at its initial norm.
    pub projected: bool,
    /// The data-dependent init (paper Section 3) on warm-up observations before learning.
    pub data_init: bool,
}

impl Recipe {
    /// Layer settings for one layer; `penultimate` says whether it feeds the output layer.
    pub fn layer(&self, opts: &NormOptions, penultimate: bool) -> LayerConfig {
        let param = match (self.param, opts.spectral_layers) {
            (Param::Spectral, SpectralLayers::Penultimate) if !penultimate => Param::Plain,
            (p, _) => p,
        };
        LayerConfig { param, project: self.projected, ..Default::default() }
    }

    /// Whether training passes normalize with statistics of the batch (mean-only BN).
    pub fn uses_batch_statistics(&self) -> bool {
        matches!(self.param, Param::WeightNorm { mean_only_bn: true })
    }

    /// Whether weights are weight-normalized (`g v / ||v||`).
    pub fn weight_normed(&self) -> bool {
        matches!(self.param, Param::WeightNorm { .. })
    }
}

/// How a layer's weight is parameterized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// A plain weight matrix / kernel.
    Plain,
    /// Weight normalization; `mean_only_bn` adds mean-only batch normalization.
    WeightNorm {
        /// Subtract the minibatch mean of the pre-activation (running mean at eval).
        mean_only_bn: bool,
    },
    /// Spectral normalization of a plain weight.
    Spectral,
}

/// Which axes a convolution's layer norm normalizes (a dense layer's: its units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerNormAxes {
    /// Over the channels at every position, one scale and shift per channel (Flax's
    /// `nn.LayerNorm` on an NHWC map, as purejaxql's PQN).
    #[default]
    Channels,
    /// Over channels, rows and columns together, one scale and shift per element (PyTorch's
    /// `nn.LayerNorm([C, H, W])`, as CleanRL's PQN).
    Chw,
}

impl LayerNormAxes {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            LayerNormAxes::Channels => "channels",
            LayerNormAxes::Chw => "chw",
        }
    }
}

/// Layer settings, with tch-style defaults.
#[derive(Debug, Clone, Copy)]
pub struct LayerConfig {
    /// Parameterization.
    pub param: Param,
    /// Momentum of the mean-only BN running mean (`running = m * running + (1-m) * batch`).
    pub bn_momentum: f64,
    /// Std of the initial `v` entries (paper: 0.05).
    pub v_init_std: f64,
    /// Weight norm only: keep every row of `v` at its initial norm ([`Layer::project`]).
    pub project: bool,
}

impl Default for LayerConfig {
    fn default() -> Self {
        LayerConfig {
            param: Param::WeightNorm { mean_only_bn: false },
            bn_momentum: 0.9,
            v_init_std: 0.05,
            project: false,
        }
    }
}
