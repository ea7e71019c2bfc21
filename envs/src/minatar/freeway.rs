//! Freeway: a chicken crosses eight lanes of cars, from the bottom row to the top.
//!
//! Rules (MinAtar's description): the chicken (column 4) moves up or down at most once every 3
//! frames; reaching the top row gives +1, sends it back to the bottom and draws new car speeds; a
//! car on its cell sends it back to the bottom. Car `i` drives in row `i + 1`, moving one cell
//! every `|speed|` frames (speed 1-5, its sign the direction) and wrapping around the edges. The
//! game ends after 2,500 frames. Channels: chicken, car, and one trail channel per speed, lit
//! behind each car. Minimal actions: no-op, up, down.

use super::rng::RandomState;
use super::{Action, Game, Grid};

const CHICKEN: usize = 0;
const CAR: usize = 1;
const TRAIL_1: usize = 2;
/// Frames between two moves of the chicken.
const CHICKEN_PERIOD: i32 = 3;
/// Frames in a game.
const TIME_LIMIT: i32 = 2500;
const COLUMN: i32 = 4;

#[derive(Clone, Copy, Default)]
struct Car {
    x: i32,
    row: i32,
    /// Frames until its next move.
    timer: i32,
    /// Frames per move, signed: positive drives right.
    speed: i32,
}

#[derive(Clone, Default)]
pub(super) struct Freeway {
    y: i32,
    move_timer: i32,
    time_left: i32,
    cars: [Car; 8],
    over: bool,
}

impl Freeway {
    /// New speeds for all cars: eight magnitudes `randint(1, 6)`, then eight directions, each
    /// left with probability 1/2 (one `rand()` each).
    fn draw_speeds(&mut self, rng: &mut RandomState) {
        let magnitudes: [i32; 8] = std::array::from_fn(|_| 1 + rng.below(5) as i32);
        for (car, m) in self.cars.iter_mut().zip(magnitudes) {
            let sign = if rng.weighted_coin(0.5) { -1 } else { 1 };
            car.speed = m * sign;
            car.timer = m;
        }
    }

    fn hit(&self, car: &Car) -> bool {
        car.x == COLUMN && car.row == self.y
    }
}

impl Game for Freeway {
    fn channels(&self) -> usize {
        7
    }
    fn minimal_actions(&self) -> &'static [Action] {
        &[Action::Noop, Action::Up, Action::Down]
    }

    fn reset(&mut self, rng: &mut RandomState) {
        *self = Freeway { y: 9, move_timer: CHICKEN_PERIOD, time_left: TIME_LIMIT, ..Default::default() };
        for (i, car) in self.cars.iter_mut().enumerate() {
            car.row = i as i32 + 1;
        }
        self.draw_speeds(rng);
    }

    fn act(&mut self, a: Action, rng: &mut RandomState) -> (f32, bool) {
        if self.over {
            return (0.0, true);
        }
        let mut reward = 0.0;
        if self.move_timer == 0 {
            match a {
                Action::Up => {
                    self.move_timer = CHICKEN_PERIOD;
                    self.y = (self.y - 1).max(0);
                }
                Action::Down => {
                    self.move_timer = CHICKEN_PERIOD;
                    self.y = (self.y + 1).min(9);
                }
                _ => {}
            }
        }
        if self.y == 0 {
            reward += 1.0;
            self.draw_speeds(rng);
            self.y = 9;
        }
        for i in 0..self.cars.len() {
            if self.hit(&self.cars[i]) {
                self.y = 9;
            }
            let car = &mut self.cars[i];
            if car.timer == 0 {
                car.timer = car.speed.abs();
                car.x += car.speed.signum();
                car.x = car.x.rem_euclid(10);
                if self.hit(&self.cars[i]) {
                    self.y = 9;
                }
            } else {
                car.timer -= 1;
            }
        }
        if self.move_timer > 0 {
            self.move_timer -= 1;
        }
        self.time_left -= 1;
        if self.time_left < 0 {
            self.over = true;
        }
        (reward, self.over)
    }

    fn render(&self, g: &mut Grid) {
        g.set(CHICKEN, self.y, COLUMN);
        for car in &self.cars {
            g.set(CAR, car.row, car.x);
            let back = (car.x - car.speed.signum()).rem_euclid(10);
            g.set(TRAIL_1 + car.speed.unsigned_abs() as usize - 1, car.row, back);
        }
    }
}
