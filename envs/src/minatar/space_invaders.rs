//! Space Invaders: a cannon on the bottom row shoots up at a 4 x 6 block of aliens.
//!
//! Rules (MinAtar's description): +1 per alien shot. The aliens step sideways together; when one
//! reaches an edge they all step down instead and turn. They move every `min(aliens left,
//! move interval)` frames, so the last ones speed up, and the nearest column of aliens shoots
//! every 10 frames. A cleared wave is replaced by a new one; with ramping each new wave's move
//! interval is one frame shorter (12 down to 6). The cannon may fire every 5 frames. The game
//! ends when an alien or an alien bullet reaches the cannon. Channels: cannon, alien, alien
//! moving left, alien moving right, cannon bullet, alien bullet. Minimal actions: no-op, left,
//! right, fire.

use super::rng::RandomState;
use super::{Action, Game, Grid};

const CANNON: usize = 0;
const ALIEN: usize = 1;
const ALIEN_LEFT: usize = 2;
const ALIEN_RIGHT: usize = 3;
const OWN_BULLET: usize = 4;
const ALIEN_BULLET: usize = 5;
const SHOT_COOL_DOWN: i32 = 5;
const INIT_MOVE_INTERVAL: i32 = 12;
const ALIEN_SHOT_INTERVAL: i32 = 10;

/// A 10 x 10 map of cells, one bit each: row `y` is `rows[y]`, column `x` bit `x`.
type Map = [u16; 10];

fn column(m: &Map, x: i32) -> bool {
    m.iter().any(|r| r >> x & 1 == 1)
}

fn count(m: &Map) -> i32 {
    m.iter().map(|r| r.count_ones() as i32).sum()
}

/// A fresh wave: rows 0-3, columns 2-7.
fn wave() -> Map {
    let mut m = [0; 10];
    for r in &mut m[0..4] {
        *r = 0b11_1111 << 2;
    }
    m
}

#[derive(Clone, Default)]
pub(super) struct SpaceInvaders {
    ramping: bool,
    x: i32,
    own_bullets: Map,
    alien_bullets: Map,
    aliens: Map,
    /// -1 left, +1 right.
    alien_dir: i32,
    move_interval: i32,
    move_timer: i32,
    shot_timer: i32,
    cool_down: i32,
    over: bool,
}

impl SpaceInvaders {
    pub(super) fn new(ramping: bool) -> SpaceInvaders {
        SpaceInvaders { ramping, ..Default::default() }
    }

    /// The lowest alien of the column nearest the cannon (ties: the left column).
    fn nearest_alien(&self) -> Option<(usize, i32)> {
        let mut order: Vec<i32> = (0..10).collect();
        order.sort_by_key(|c| (c - self.x).abs());
        let x = order.into_iter().find(|&c| column(&self.aliens, c))?;
        let y = (0..10).rev().find(|&y| self.aliens[y] >> x & 1 == 1)?;
        Some((y, x))
    }

    fn alien_at_cannon(&self) -> bool {
        self.aliens[9] >> self.x & 1 == 1
    }
}

impl Game for SpaceInvaders {
    fn channels(&self) -> usize {
        6
    }
    fn minimal_actions(&self) -> &'static [Action] {
        &[Action::Noop, Action::Left, Action::Right, Action::Fire]
    }

    fn reset(&mut self, _rng: &mut RandomState) {
        *self = SpaceInvaders {
            ramping: self.ramping,
            x: 5,
            aliens: wave(),
            alien_dir: -1,
            move_interval: INIT_MOVE_INTERVAL,
            move_timer: INIT_MOVE_INTERVAL,
            shot_timer: ALIEN_SHOT_INTERVAL,
            ..Default::default()
        };
    }

    fn act(&mut self, a: Action, _rng: &mut RandomState) -> (f32, bool) {
        if self.over {
            return (0.0, true);
        }
        match a {
            Action::Fire if self.cool_down == 0 => {
                self.own_bullets[9] |= 1 << self.x;
                self.cool_down = SHOT_COOL_DOWN;
            }
            Action::Left => self.x = (self.x - 1).max(0),
            Action::Right => self.x = (self.x + 1).min(9),
            _ => {}
        }
        // Bullets: the cannon's go up a row (leaving the top), the aliens' down a row.
        self.own_bullets.rotate_left(1);
        self.own_bullets[9] = 0;
        self.alien_bullets.rotate_right(1);
        self.alien_bullets[0] = 0;
        if self.alien_bullets[9] >> self.x & 1 == 1 {
            self.over = true;
        }
        if self.alien_at_cannon() {
            self.over = true;
        }
        if self.move_timer == 0 {
            self.move_timer = count(&self.aliens).min(self.move_interval);
            let at_edge =
                (self.alien_dir < 0 && column(&self.aliens, 0)) || (self.alien_dir > 0 && column(&self.aliens, 9));
            if at_edge {
                self.alien_dir = -self.alien_dir;
                if self.aliens[9] != 0 {
                    self.over = true;
                }
                self.aliens.rotate_right(1);
            } else if self.alien_dir > 0 {
                // Columns wrap around, as a roll of the map does (an edge stops them first).
                for r in &mut self.aliens {
                    *r = (*r << 1 | *r >> 9) & 0x3ff;
                }
            } else {
                for r in &mut self.aliens {
                    *r = (*r >> 1 | (*r & 1) << 9) & 0x3ff;
                }
            }
            if self.alien_at_cannon() {
                self.over = true;
            }
        }
        if self.shot_timer == 0 {
            self.shot_timer = ALIEN_SHOT_INTERVAL;
            if let Some((y, x)) = self.nearest_alien() {
                self.alien_bullets[y] |= 1 << x;
            }
        }
        let mut reward = 0.0;
        for (alien, bullet) in self.aliens.iter_mut().zip(&mut self.own_bullets) {
            let kills = *alien & *bullet;
            reward += kills.count_ones() as f32;
            *alien &= !kills;
            *bullet &= !kills;
        }
        if self.cool_down > 0 {
            self.cool_down -= 1;
        }
        self.move_timer -= 1;
        self.shot_timer -= 1;
        if count(&self.aliens) == 0 {
            if self.move_interval > 6 && self.ramping {
                self.move_interval -= 1;
            }
            self.aliens = wave();
        }
        (reward, self.over)
    }

    fn render(&self, g: &mut Grid) {
        g.set(CANNON, 9, self.x);
        let dir = if self.alien_dir < 0 { ALIEN_LEFT } else { ALIEN_RIGHT };
        for y in 0..10 {
            for x in 0..10 {
                let yi = y as i32;
                if self.aliens[y] >> x & 1 == 1 {
                    g.set(ALIEN, yi, x);
                    g.set(dir, yi, x);
                }
                if self.own_bullets[y] >> x & 1 == 1 {
                    g.set(OWN_BULLET, yi, x);
                }
                if self.alien_bullets[y] >> x & 1 == 1 {
                    g.set(ALIEN_BULLET, yi, x);
                }
            }
        }
    }
}
