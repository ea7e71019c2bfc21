//! Asterix: the player moves in four directions; enemies and gold cross rows 1-8 from the sides.
//!
//! Rules (MinAtar's description): +1 for touching gold, the game ends on touching an enemy.
//! Every `spawn_speed` frames an entity enters at the left or right edge of a free row (one
//! entity per row, eight rows), gold with probability 1/3; entities move one cell every
//! `move_speed` frames and leave at the far edge. With ramping, every 100 frames the spawn
//! interval shrinks by one and, every second time, the move interval too (down to 1). Channels:
//! player, enemy, trail (behind each entity), gold. Minimal actions: no-op and the four moves.

use super::rng::RandomState;
use super::{Action, Game, Grid};

const PLAYER: usize = 0;
const ENEMY: usize = 1;
const TRAIL: usize = 2;
const GOLD: usize = 3;
const RAMP_INTERVAL: i32 = 100;
const INIT_SPAWN_SPEED: i32 = 10;
const INIT_MOVE_SPEED: i32 = 5;

#[derive(Clone, Copy)]
struct Entity {
    x: i32,
    /// Moves right (it entered at the left edge).
    rightward: bool,
    gold: bool,
}

#[derive(Clone, Default)]
pub(super) struct Asterix {
    ramping: bool,
    x: i32,
    y: i32,
    /// Slot `i` drives in row `i + 1`.
    slots: [Option<Entity>; 8],
    spawn_speed: i32,
    spawn_timer: i32,
    move_speed: i32,
    move_timer: i32,
    ramp_timer: i32,
    ramp_index: i32,
    over: bool,
}

impl Asterix {
    pub(super) fn new(ramping: bool) -> Asterix {
        Asterix { ramping, ..Default::default() }
    }

    fn spawn(&mut self, rng: &mut RandomState) {
        let rightward = rng.weighted_coin(0.5);
        let gold = rng.weighted_coin(1.0 / 3.0);
        let free: Vec<usize> = (0..8).filter(|&i| self.slots[i].is_none()).collect();
        if free.is_empty() {
            return;
        }
        let slot = free[rng.below(free.len() as u32) as usize];
        self.slots[slot] = Some(Entity { x: if rightward { 0 } else { 9 }, rightward, gold });
    }

    /// Touching slot `i`'s entity: gold is collected, an enemy ends the game.
    fn touch(&mut self, i: usize, reward: &mut f32) {
        if let Some(e) = self.slots[i] {
            if e.x == self.x && i as i32 + 1 == self.y {
                if e.gold {
                    self.slots[i] = None;
                    *reward += 1.0;
                } else {
                    self.over = true;
                }
            }
        }
    }
}

impl Game for Asterix {
    fn channels(&self) -> usize {
        4
    }
    fn minimal_actions(&self) -> &'static [Action] {
        &[Action::Noop, Action::Left, Action::Up, Action::Right, Action::Down]
    }

    fn reset(&mut self, _rng: &mut RandomState) {
        *self = Asterix {
            ramping: self.ramping,
            x: 5,
            y: 5,
            spawn_speed: INIT_SPAWN_SPEED,
            spawn_timer: INIT_SPAWN_SPEED,
            move_speed: INIT_MOVE_SPEED,
            move_timer: INIT_MOVE_SPEED,
            ramp_timer: RAMP_INTERVAL,
            ..Default::default()
        };
    }

    fn act(&mut self, a: Action, rng: &mut RandomState) -> (f32, bool) {
        if self.over {
            return (0.0, true);
        }
        let mut reward = 0.0;
        if self.spawn_timer == 0 {
            self.spawn(rng);
            self.spawn_timer = self.spawn_speed;
        }
        match a {
            Action::Left => self.x = (self.x - 1).max(0),
            Action::Right => self.x = (self.x + 1).min(9),
            Action::Up => self.y = (self.y - 1).max(1),
            Action::Down => self.y = (self.y + 1).min(8),
            _ => {}
        }
        for i in 0..8 {
            self.touch(i, &mut reward);
        }
        if self.move_timer == 0 {
            self.move_timer = self.move_speed;
            for i in 0..8 {
                if let Some(e) = &mut self.slots[i] {
                    e.x += if e.rightward { 1 } else { -1 };
                    if !(0..=9).contains(&e.x) {
                        self.slots[i] = None;
                    }
                }
                self.touch(i, &mut reward);
            }
        }
        self.spawn_timer -= 1;
        self.move_timer -= 1;
        if self.ramping && (self.spawn_speed > 1 || self.move_speed > 1) {
            if self.ramp_timer >= 0 {
                self.ramp_timer -= 1;
            } else {
                if self.move_speed > 1 && self.ramp_index % 2 == 1 {
                    self.move_speed -= 1;
                }
                if self.spawn_speed > 1 {
                    self.spawn_speed -= 1;
                }
                self.ramp_index += 1;
                self.ramp_timer = RAMP_INTERVAL;
            }
        }
        (reward, self.over)
    }

    fn render(&self, g: &mut Grid) {
        g.set(PLAYER, self.y, self.x);
        for (i, e) in self.slots.iter().enumerate() {
            if let Some(e) = e {
                let row = i as i32 + 1;
                g.set(if e.gold { GOLD } else { ENEMY }, row, e.x);
                let back = e.x + if e.rightward { -1 } else { 1 };
                if (0..=9).contains(&back) {
                    g.set(TRAIL, row, back);
                }
            }
        }
    }
}
