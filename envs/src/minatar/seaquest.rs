//! Seaquest: a two-cell submarine shoots fish and enemy submarines, rescues divers and surfaces
//! for oxygen.
//!
//! Rules (MinAtar's description): +1 per enemy shot. Enemies (a third of them submarines, which
//! shoot) and divers cross rows 1-8 from the sides; no enemy enters a row where another one comes
//! the other way. Touching a diver picks it
//! up (six at most). Oxygen (200 frames) runs down under water; surfacing with at least one diver
//! refills it and costs one diver, or, with six, all of them and gives one point per tenth of
//! oxygen left; each surfacing also makes the enemies spawn and move faster (with ramping). The
//! game ends on touching an enemy or its bullet, when oxygen runs out, or when surfacing with no
//! diver. Channels: sub front, sub back, own bullet, trail, enemy bullet, fish, enemy sub, oxygen
//! gauge, diver gauge, diver. Minimal actions: all six.
//!
//! The objects live in lists updated in a fixed order, each walked from its end while items are
//! removed from it; [`Lists`] keeps that order (and what "remove" removes: the first equal item)
//! exactly, since it decides which of two objects meeting in one cell is hit.

use super::rng::RandomState;
use super::{Action, Game, Grid};

const SUB_FRONT: usize = 0;
const SUB_BACK: usize = 1;
const OWN_BULLET: usize = 2;
const TRAIL: usize = 3;
const ENEMY_BULLET: usize = 4;
const FISH: usize = 5;
const ENEMY_SUB: usize = 6;
const OXYGEN: usize = 7;
const DIVERS: usize = 8;
const DIVER: usize = 9;

const MAX_OXYGEN: i32 = 200;
const INIT_SPAWN_SPEED: i32 = 20;
const DIVER_SPAWN_SPEED: i32 = 30;
const INIT_MOVE_INTERVAL: i32 = 5;
const SHOT_COOL_DOWN: i32 = 5;
const ENEMY_SHOT_INTERVAL: i32 = 10;
const DIVER_MOVE_INTERVAL: i32 = 5;
const MAX_DIVERS: i32 = 6;

/// A moving object: bullets use `x, y, right`; fish and divers also `timer` (frames to their
/// next move); enemy subs also `shot` (frames to their next shot).
#[derive(Clone, Copy, PartialEq, Default)]
struct Obj {
    x: i32,
    y: i32,
    right: bool,
    timer: i32,
    shot: i32,
}

impl Obj {
    fn step(&mut self) {
        self.x += if self.right { 1 } else { -1 };
    }
    fn outside(&self) -> bool {
        !(0..=9).contains(&self.x)
    }
    fn at(&self, x: i32, y: i32) -> bool {
        self.x == x && self.y == y
    }
    fn back(&self) -> i32 {
        self.x + if self.right { -1 } else { 1 }
    }
}

/// The five object lists, as ids into one arena of objects (an object removed from its list
/// may still be updated by the step that removed it).
#[derive(Clone, Default)]
struct Lists {
    arena: Vec<Obj>,
    own: Vec<usize>,
    enemy_bullets: Vec<usize>,
    fish: Vec<usize>,
    subs: Vec<usize>,
    divers: Vec<usize>,
}

#[derive(Clone, Copy)]
enum L {
    Own,
    EnemyBullets,
    Fish,
    Subs,
    Divers,
}

impl Lists {
    fn list(&mut self, l: L) -> &mut Vec<usize> {
        match l {
            L::Own => &mut self.own,
            L::EnemyBullets => &mut self.enemy_bullets,
            L::Fish => &mut self.fish,
            L::Subs => &mut self.subs,
            L::Divers => &mut self.divers,
        }
    }
    fn push(&mut self, l: L, o: Obj) {
        self.arena.push(o);
        let id = self.arena.len() - 1;
        self.list(l).push(id);
    }
    /// Remove the first item equal to object `id`.
    fn remove(&mut self, l: L, id: usize) {
        let want = self.arena[id];
        let arena = std::mem::take(&mut self.arena);
        let list = self.list(l);
        if let Some(j) = list.iter().position(|&k| arena[k] == want) {
            list.remove(j);
        }
        self.arena = arena;
    }
    /// The item at `i` of a list walked from its end, while it has one there.
    fn rev_item(&mut self, l: L, i: isize) -> Option<usize> {
        let list = self.list(l);
        (i >= 0 && (i as usize) < list.len()).then(|| list[i as usize])
    }
    /// The first object of `l` in the cell of object `id`.
    fn first_in_cell(&mut self, l: L, id: usize) -> Option<usize> {
        let (x, y) = (self.arena[id].x, self.arena[id].y);
        let arena = std::mem::take(&mut self.arena);
        let found = self.list(l).iter().copied().find(|&k| arena[k].at(x, y));
        self.arena = arena;
        found
    }
}

#[derive(Clone, Default)]
pub(super) struct Seaquest {
    ramping: bool,
    oxygen: i32,
    divers_aboard: i32,
    x: i32,
    y: i32,
    facing_right: bool,
    o: Lists,
    spawn_speed: i32,
    spawn_timer: i32,
    diver_timer: i32,
    move_speed: i32,
    ramp_index: i32,
    cool_down: i32,
    surfaced: bool,
    over: bool,
}

impl Seaquest {
    pub(super) fn new(ramping: bool) -> Seaquest {
        Seaquest { ramping, ..Default::default() }
    }

    fn spawn_enemy(&mut self, rng: &mut RandomState) {
        let right = rng.weighted_coin(0.5);
        let sub = rng.weighted_coin(1.0 / 3.0);
        let y = 1 + rng.below(8) as i32;
        let o = &self.o;
        // No enemy enters a row where another comes the other way.
        if o.subs.iter().chain(&o.fish).any(|&k| o.arena[k].y == y && o.arena[k].right != right) {
            return;
        }
        let x = if right { 0 } else { 9 };
        let timer = self.move_speed;
        if sub {
            self.o.push(L::Subs, Obj { x, y, right, timer, shot: ENEMY_SHOT_INTERVAL });
        } else {
            self.o.push(L::Fish, Obj { x, y, right, timer, shot: 0 });
        }
    }

    fn spawn_diver(&mut self, rng: &mut RandomState) {
        let right = rng.weighted_coin(0.5);
        let y = 1 + rng.below(8) as i32;
        self.o.push(L::Divers, Obj { x: if right { 0 } else { 9 }, y, right, timer: DIVER_MOVE_INTERVAL, shot: 0 });
    }

    fn at_sub(&self, id: usize) -> bool {
        self.o.arena[id].at(self.x, self.y)
    }

    fn own_bullets(&mut self) -> f32 {
        let mut reward = 0.0;
        let mut i = self.o.own.len() as isize - 1;
        while let Some(id) = self.o.rev_item(L::Own, i) {
            i -= 1;
            self.o.arena[id].step();
            if self.o.arena[id].outside() {
                self.o.remove(L::Own, id);
                continue;
            }
            for target in [L::Fish, L::Subs] {
                if let Some(k) = self.o.first_in_cell(target, id) {
                    self.o.remove(target, k);
                    self.o.remove(L::Own, id);
                    reward += 1.0;
                    break;
                }
            }
        }
        reward
    }

    fn divers(&mut self) {
        let mut i = self.o.divers.len() as isize - 1;
        while let Some(id) = self.o.rev_item(L::Divers, i) {
            i -= 1;
            if self.at_sub(id) && self.divers_aboard < MAX_DIVERS {
                self.o.remove(L::Divers, id);
                self.divers_aboard += 1;
            } else if self.o.arena[id].timer == 0 {
                self.o.arena[id].timer = DIVER_MOVE_INTERVAL;
                self.o.arena[id].step();
                if self.o.arena[id].outside() {
                    self.o.remove(L::Divers, id);
                } else if self.at_sub(id) && self.divers_aboard < MAX_DIVERS {
                    self.o.remove(L::Divers, id);
                    self.divers_aboard += 1;
                }
            } else {
                self.o.arena[id].timer -= 1;
            }
        }
    }

    /// Fish and enemy subs: move every `move_speed` frames; a sub also shoots.
    fn enemies(&mut self, l: L) -> f32 {
        let mut reward = 0.0;
        let mut i = self.o.list(l).len() as isize - 1;
        while let Some(id) = self.o.rev_item(l, i) {
            i -= 1;
            if self.at_sub(id) {
                self.over = true;
            }
            if self.o.arena[id].timer == 0 {
                self.o.arena[id].timer = self.move_speed;
                self.o.arena[id].step();
                if self.o.arena[id].outside() {
                    self.o.remove(l, id);
                } else if self.at_sub(id) {
                    self.over = true;
                } else if let Some(b) = self.o.first_in_cell(L::Own, id) {
                    self.o.remove(l, id);
                    self.o.remove(L::Own, b);
                    reward += 1.0;
                }
            } else {
                self.o.arena[id].timer -= 1;
            }
            if matches!(l, L::Subs) {
                let s = &mut self.o.arena[id];
                if s.shot == 0 {
                    s.shot = ENEMY_SHOT_INTERVAL;
                    let b = Obj { x: s.x, y: s.y, right: s.right, timer: 0, shot: 0 };
                    self.o.push(L::EnemyBullets, b);
                } else {
                    s.shot -= 1;
                }
            }
        }
        reward
    }

    fn enemy_bullets(&mut self) {
        let mut i = self.o.enemy_bullets.len() as isize - 1;
        while let Some(id) = self.o.rev_item(L::EnemyBullets, i) {
            i -= 1;
            if self.at_sub(id) {
                self.over = true;
            }
            self.o.arena[id].step();
            if self.o.arena[id].outside() {
                self.o.remove(L::EnemyBullets, id);
            } else if self.at_sub(id) {
                self.over = true;
            }
        }
    }

    fn surface(&mut self) -> f32 {
        self.surfaced = true;
        let reward = if self.divers_aboard == MAX_DIVERS {
            self.divers_aboard = 0;
            (self.oxygen * 10 / MAX_OXYGEN) as f32
        } else {
            self.divers_aboard -= 1;
            0.0
        };
        self.oxygen = MAX_OXYGEN;
        if self.ramping && (self.spawn_speed > 1 || self.move_speed > 2) {
            if self.move_speed > 2 && self.ramp_index % 2 == 1 {
                self.move_speed -= 1;
            }
            if self.spawn_speed > 1 {
                self.spawn_speed -= 1;
            }
            self.ramp_index += 1;
        }
        reward
    }
}

impl Game for Seaquest {
    fn channels(&self) -> usize {
        10
    }
    fn minimal_actions(&self) -> &'static [Action] {
        &[Action::Noop, Action::Left, Action::Up, Action::Right, Action::Down, Action::Fire]
    }

    fn reset(&mut self, _rng: &mut RandomState) {
        *self = Seaquest {
            ramping: self.ramping,
            oxygen: MAX_OXYGEN,
            x: 5,
            spawn_speed: INIT_SPAWN_SPEED,
            spawn_timer: INIT_SPAWN_SPEED,
            diver_timer: DIVER_SPAWN_SPEED,
            move_speed: INIT_MOVE_INTERVAL,
            surfaced: true,
            ..Default::default()
        };
    }

    fn act(&mut self, a: Action, rng: &mut RandomState) -> (f32, bool) {
        if self.over {
            return (0.0, true);
        }
        if self.spawn_timer == 0 {
            self.spawn_enemy(rng);
            self.spawn_timer = self.spawn_speed;
        }
        if self.diver_timer == 0 {
            self.spawn_diver(rng);
            self.diver_timer = DIVER_SPAWN_SPEED;
        }
        match a {
            Action::Fire if self.cool_down == 0 => {
                let b = Obj { x: self.x, y: self.y, right: self.facing_right, timer: 0, shot: 0 };
                self.o.push(L::Own, b);
                self.cool_down = SHOT_COOL_DOWN;
            }
            Action::Left => {
                self.x = (self.x - 1).max(0);
                self.facing_right = false;
            }
            Action::Right => {
                self.x = (self.x + 1).min(9);
                self.facing_right = true;
            }
            Action::Up => self.y = (self.y - 1).max(0),
            Action::Down => self.y = (self.y + 1).min(8),
            _ => {}
        }
        let mut reward = self.own_bullets();
        self.divers();
        reward += self.enemies(L::Subs);
        self.enemy_bullets();
        reward += self.enemies(L::Fish);
        for t in [&mut self.spawn_timer, &mut self.diver_timer, &mut self.cool_down] {
            if *t > 0 {
                *t -= 1;
            }
        }
        if self.y > 0 {
            self.oxygen -= 1;
            self.surfaced = false;
            if self.oxygen < 0 {
                self.over = true;
            }
        } else if !self.surfaced {
            if self.divers_aboard == 0 {
                self.over = true;
            } else {
                reward += self.surface();
            }
        }
        if self.o.arena.len() > 4096 {
            self.compact();
        }
        (reward, self.over)
    }

    fn render(&self, g: &mut Grid) {
        g.set(SUB_FRONT, self.y, self.x);
        // numpy indexing: a back cell left of column 0 is column 9.
        let back = if self.facing_right { self.x - 1 } else { self.x + 1 };
        g.set(SUB_BACK, self.y, back.rem_euclid(10));
        // Slices 0:n and 9-d:9 of row 9, numpy's way (a negative end counts from 10).
        let end = |n: i32| if n < 0 { (10 + n).max(0) } else { n.min(10) };
        for x in 0..end(self.oxygen * 10 / MAX_OXYGEN) {
            g.set(OXYGEN, 9, x);
        }
        let start = 9 - self.divers_aboard;
        let start = if start < 0 { (10 + start).max(0) } else { start };
        for x in start..9 {
            g.set(DIVERS, 9, x);
        }
        let o = &self.o;
        let draw = |g: &mut Grid, ids: &[usize], c: usize, trail: bool| {
            for &k in ids {
                let b = o.arena[k];
                g.set(c, b.y, b.x);
                if trail && (0..=9).contains(&b.back()) {
                    g.set(TRAIL, b.y, b.back());
                }
            }
        };
        draw(g, &o.own, OWN_BULLET, false);
        draw(g, &o.enemy_bullets, ENEMY_BULLET, false);
        draw(g, &o.fish, FISH, true);
        draw(g, &o.subs, ENEMY_SUB, true);
        draw(g, &o.divers, DIVER, true);
    }
}

impl Seaquest {
    /// Drop the arena's removed objects (between steps no removed object is referenced).
    fn compact(&mut self) {
        let old = std::mem::take(&mut self.o.arena);
        for l in [L::Own, L::EnemyBullets, L::Fish, L::Subs, L::Divers] {
            let ids = std::mem::take(self.o.list(l));
            for k in ids {
                self.o.push(l, old[k]);
            }
        }
    }
}
