//! Playing an environment with a policy: the observation a policy acts on, and greedy
//! evaluation on whole games (no episodic life), shared by the periodic evaluation of a training
//! run and by `wndqn eval`.

use anyhow::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use wndqn_agents::policy::Policy;
use wndqn_agents::replay::ObsRef;
use wndqn_envs::{Env, Obs};

/// An environment's observation as the policy's input (the whole frame stack, or the vector).
pub fn observation(o: Obs<'_>) -> ObsRef<'_> {
    match o {
        Obs::Frames { stack, .. } => ObsRef::Frame(stack),
        Obs::Vector(v) => ObsRef::Vector(v),
    }
}

/// Returns of `episodes` games played epsilon-greedily (with `epsilon` random actions).
/// An episode is cut after `max_steps` env steps; its return so far counts. `on_frame` is
/// called after every step (for videos); when it says `false` the evaluation ends there and
/// returns the games finished so far (a run that is stopping does not wait for it).
pub fn evaluate(
    env: &mut dyn Env,
    policy: &Policy,
    episodes: usize,
    epsilon: f64,
    max_steps: u64,
    seed: u64,
    mut on_frame: impl FnMut(usize, &dyn Env) -> bool,
) -> Result<Vec<f64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut returns = Vec::with_capacity(episodes);
    for ep in 0..episodes {
        env.reset(Some(seed.wrapping_add(ep as u64 * 7919)))?;
        if !on_frame(ep, env) {
            return Ok(returns);
        }
        let mut ret = 0.0;
        for _ in 0..max_steps {
            let a = policy.act(observation(env.obs()), epsilon, &mut rng);
            let s = env.step(a);
            ret += s.raw_reward as f64;
            if !on_frame(ep, env) {
                return Ok(returns);
            }
            if let Some(e) = s.episode {
                ret = e.ret;
                break;
            }
            if s.terminated || s.truncated {
                env.reset(None)?;
            }
        }
        returns.push(ret);
    }
    Ok(returns)
}

/// Mean, median, std, min, max.
pub fn stats(v: &[f64]) -> [f64; 5] {
    if v.is_empty() {
        return [f64::NAN; 5];
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let median = if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 };
    [mean, median, var.sqrt(), s[0], s[s.len() - 1]]
}
