//! Breakout: a paddle on the bottom row, a ball on diagonals, three rows of bricks (rows 1-3).
//!
//! Rules (MinAtar's description): +1 per brick; the ball reflects off walls, the ceiling and
//! bricks (a brick hit sends it back to the row it came from); on the bottom row it bounces back
//! up if the paddle is under it (straight back when the paddle is where the ball was, sideways
//! when the paddle is where it is going), otherwise the game ends. When every brick is gone,
//! three new rows appear as the ball reaches the bottom row. Channels: paddle, ball, trail (the
//! ball's previous cell), brick. Minimal actions: no-op, left, right.

use super::rng::RandomState;
use super::{Action, Game, Grid};

const PADDLE: usize = 0;
const BALL: usize = 1;
const TRAIL: usize = 2;
const BRICK: usize = 3;

/// Diagonal directions: up-left, up-right, down-right, down-left.
const DX: [i32; 4] = [-1, 1, 1, -1];
const DY: [i32; 4] = [-1, -1, 1, 1];
/// The direction after a horizontal, a vertical and a paddle-edge bounce.
const FLIP_X: [usize; 4] = [1, 0, 3, 2];
const FLIP_Y: [usize; 4] = [3, 2, 1, 0];
const FLIP_XY: [usize; 4] = [2, 3, 0, 1];

#[derive(Clone, Default)]
pub(super) struct Breakout {
    paddle: i32,
    ball: (i32, i32),
    last: (i32, i32),
    dir: usize,
    /// The ball hit a brick on the previous step (a second hit in a row breaks nothing).
    striking: bool,
    bricks: [[bool; 10]; 10],
    over: bool,
}

impl Breakout {
    fn refill(&mut self) {
        for row in &mut self.bricks[1..4] {
            *row = [true; 10];
        }
    }
}

impl Game for Breakout {
    fn channels(&self) -> usize {
        4
    }
    fn minimal_actions(&self) -> &'static [Action] {
        &[Action::Noop, Action::Left, Action::Right]
    }

    fn reset(&mut self, rng: &mut RandomState) {
        let right_side = rng.below(2) == 1;
        *self = Breakout { paddle: 4, ..Default::default() };
        self.ball = if right_side { (9, 3) } else { (0, 3) };
        self.dir = if right_side { 3 } else { 2 };
        self.last = self.ball;
        self.refill();
    }

    fn act(&mut self, a: Action, _rng: &mut RandomState) -> (f32, bool) {
        if self.over {
            return (0.0, true);
        }
        match a {
            Action::Left => self.paddle = (self.paddle - 1).max(0),
            Action::Right => self.paddle = (self.paddle + 1).min(9),
            _ => {}
        }
        self.last = self.ball;
        let (mut x, mut y) = (self.ball.0 + DX[self.dir], self.ball.1 + DY[self.dir]);
        let mut reward = 0.0;
        let mut hit_brick = false;
        if !(0..=9).contains(&x) {
            x = x.clamp(0, 9);
            self.dir = FLIP_X[self.dir];
        }
        if y < 0 {
            y = 0;
            self.dir = FLIP_Y[self.dir];
        } else if self.bricks[y as usize][x as usize] {
            hit_brick = true;
            if !self.striking {
                reward += 1.0;
                self.striking = true;
                self.bricks[y as usize][x as usize] = false;
                y = self.last.1;
                self.dir = FLIP_Y[self.dir];
            }
        } else if y == 9 {
            if self.bricks.iter().flatten().all(|b| !b) {
                self.refill();
            }
            if self.ball.0 == self.paddle {
                self.dir = FLIP_Y[self.dir];
                y = self.last.1;
            } else if x == self.paddle {
                self.dir = FLIP_XY[self.dir];
                y = self.last.1;
            } else {
                self.over = true;
            }
        }
        if !hit_brick {
            self.striking = false;
        }
        self.ball = (x, y);
        (reward, self.over)
    }

    fn render(&self, g: &mut Grid) {
        g.set(PADDLE, 9, self.paddle);
        g.set(BALL, self.ball.1, self.ball.0);
        g.set(TRAIL, self.last.1, self.last.0);
        for (y, row) in self.bricks.iter().enumerate() {
            for (x, &b) in row.iter().enumerate() {
                if b {
                    g.set(BRICK, y as i32, x as i32);
                }
            }
        }
    }
}
