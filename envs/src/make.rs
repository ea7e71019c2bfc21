//! From an id and a config to an environment: [`EnvConfig::resolve`] fills in the id family's
//! defaults, [`make_env`] builds it.

use crate::env::{Env, EnvConfig, EnvError};
use crate::ids::{self, EnvId};
use crate::{atari, cartpole, minatar};

impl EnvConfig {
    /// Fill the family defaults in and check the values.
    pub fn resolve(&self, rom_dir: Option<&std::path::Path>) -> Result<(EnvId, EnvConfig), EnvError> {
        let id = ids::resolve(&self.id, rom_dir)?;
        let mut c = self.clone();
        if let EnvId::Atari { family, .. } = &id {
            c.frameskip.get_or_insert(family.frameskip());
            c.repeat_action_probability.get_or_insert(family.repeat_action_probability());
            c.full_action_space.get_or_insert(false);
        }
        if let EnvId::MinAtar { full_actions, .. } = &id {
            c.repeat_action_probability.get_or_insert(minatar::STICKY);
            c.full_action_space.get_or_insert(*full_actions);
            c.difficulty_ramping.get_or_insert(minatar::RAMPING);
        } else if self.difficulty_ramping.is_some() {
            return Err(EnvError::Invalid(
                "env.difficulty_ramping is a MinAtar setting; remove it for this env.id".into(),
            ));
        }
        c.validate(matches!(id, EnvId::MinAtar { .. }))?;
        Ok((id, c))
    }
}

/// Build the environment a resolved config describes.
pub fn make_env(id: &EnvId, cfg: &EnvConfig) -> Result<Box<dyn Env>, EnvError> {
    Ok(match id {
        EnvId::Atari { game, .. } => Box::new(atari::AtariEnv::new(&game.rom, cfg)?),
        EnvId::MinAtar { game, .. } => Box::new(minatar::MinAtarEnv::new(game, cfg)?),
        EnvId::CartPole => Box::new(cartpole::CartPoleEnv::new(cfg)),
    })
}
