// The C ABI that envs/src/ale.rs calls: ALE 0.12.1's C++ `ale::ALEInterface` behind `extern "C"`
// functions. Why a shim: Rust cannot call C++ methods, and ALE reports problems in three ways a
// Rust caller cannot survive: C++ exceptions (unwinding through Rust is undefined behaviour),
// `std::exit(1)` inside `loadROM` for a ROM it cannot wrap, and messages on stderr. Every entry
// point here catches exceptions and turns them into an error string, and `wale_new` identifies
// the ROM by its MD5 (as `ALEInterface::isSupportedROM` does) before ALE ever loads it, so a file
// ALE does not know is an error, never an exit or an emulator spinning on random bytes.
//
// Built by envs/build.rs together with ALE's sources (fetched by scripts/fetch_ale.sh).
// ALE is GPL-2.0; see the README's "Licence" section.

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "ale/ale_interface.hpp"
#include "ale/common/Log.hpp"
#include "ale/emucore/MD5.hxx"
#include "ale/games/Roms.hpp"

#include "c_abi.hpp"

namespace {

// The ROM's canonical name (`pong`) if ALE knows the file's MD5, else an empty string.
std::string identify(const char* path, std::string* md5_out) {
  std::ifstream f(path, std::ios::binary);
  if (!f.good()) throw std::runtime_error("cannot open the file");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::string md5 = ale::stella::MD5(bytes.data(), static_cast<uint32_t>(bytes.size()));
  if (md5_out) *md5_out = md5;
  std::unique_ptr<ale::RomSettings> s(ale::buildRomRLWrapper(path, md5));
  if (s && md5 == s->md5()) return s->rom();
  return std::string();
}

}  // namespace

extern "C" {

// Silence ALE's banner and info lines (errors still reach stderr).
void wale_quiet() { ale::Logger::setMode(ale::Logger::Error); }

// Writes the canonical ROM name of the file at `path` into `name` (empty when ALE does not know
// its MD5) and the MD5 into `md5` (33 bytes). Returns 0, or -1 with a message in `err`.
int wale_identify(const char* path, char* name, size_t name_cap, char* md5, char* err, size_t err_cap) {
  return wndqn_guarded(err, err_cap, [&] {
    std::string m;
    wndqn_set_err(name, name_cap, identify(path, &m));
    wndqn_set_err(md5, 33, m);
  });
}

// A new emulator with the ROM at `path` loaded. Settings are ALE's own: `random_seed`,
// `repeat_action_probability` (sticky actions, per frame), `max_num_frames_per_episode`
// (0 = none), game `mode` and `difficulty` (-1 = the game's default). Returns null with a
// message in `err` when the ROM is unknown or a setting is not available for this game.
void* wale_new(const char* path, int seed, float sticky, int max_frames, int mode, int difficulty,
               char* err, size_t err_cap) {
  ale::ALEInterface* out = nullptr;
  wndqn_guarded(err, err_cap, [&] {
    std::string md5;
    std::string name = identify(path, &md5);
    if (name.empty())
      throw std::runtime_error("ALE " ALE_VERSION " does not know this ROM (md5 " + md5 + ")");
    auto a = std::make_unique<ale::ALEInterface>();
    a->setInt("random_seed", seed);
    a->setFloat("repeat_action_probability", sticky);
    a->setInt("frame_skip", 1);
    a->setInt("max_num_frames_per_episode", max_frames);
    a->loadROM(path);
    if (mode >= 0) {
      auto modes = a->getAvailableModes();
      if (std::find(modes.begin(), modes.end(), static_cast<unsigned>(mode)) == modes.end()) {
        std::string list;
        for (auto m : modes) list += (list.empty() ? "" : ", ") + std::to_string(m);
        throw std::runtime_error("env.mode = " + std::to_string(mode) + " is not a mode of " + name +
                                 " (available: " + list + ")");
      }
      a->setMode(static_cast<unsigned>(mode));
    }
    if (difficulty >= 0) {
      auto ds = a->getAvailableDifficulties();
      if (std::find(ds.begin(), ds.end(), static_cast<unsigned>(difficulty)) == ds.end()) {
        std::string list;
        for (auto d : ds) list += (list.empty() ? "" : ", ") + std::to_string(d);
        throw std::runtime_error("env.difficulty = " + std::to_string(difficulty) +
                                 " is not a difficulty of " + name + " (available: " + list + ")");
      }
      a->setDifficulty(static_cast<unsigned>(difficulty));
    }
    if (mode >= 0 || difficulty >= 0) a->reset_game();
    out = a.release();
  });
  return out;
}

void wale_delete(void* ale) { delete static_cast<ale::ALEInterface*>(ale); }

int wale_act(void* ale, int action) {
  try {
    return static_cast<ale::ALEInterface*>(ale)->act(static_cast<ale::Action>(action));
  } catch (...) {
    return 0;
  }
}

// The game ended (not counting truncation by max_num_frames_per_episode).
bool wale_game_over(void* ale) { return static_cast<ale::ALEInterface*>(ale)->game_over(false); }
// The episode hit max_num_frames_per_episode.
bool wale_truncated(void* ale) { return static_cast<ale::ALEInterface*>(ale)->game_truncated(); }
void wale_reset(void* ale) { static_cast<ale::ALEInterface*>(ale)->reset_game(); }
int wale_lives(void* ale) { return static_cast<ale::ALEInterface*>(ale)->lives(); }
int wale_episode_frame(void* ale) { return static_cast<ale::ALEInterface*>(ale)->getEpisodeFrameNumber(); }

// Copies up to `cap` action codes into `out`; returns how many there are.
int wale_actions(void* ale, bool minimal, int* out, int cap) {
  auto* a = static_cast<ale::ALEInterface*>(ale);
  auto v = minimal ? a->getMinimalActionSet() : a->getLegalActionSet();
  for (size_t i = 0; i < v.size() && static_cast<int>(i) < cap; ++i) out[i] = static_cast<int>(v[i]);
  return static_cast<int>(v.size());
}

// Game modes (`difficulties = false`) or difficulties; same contract as wale_actions.
int wale_modes(void* ale, bool difficulties, int* out, int cap) {
  auto* a = static_cast<ale::ALEInterface*>(ale);
  std::vector<unsigned> v = difficulties ? a->getAvailableDifficulties() : a->getAvailableModes();
  for (size_t i = 0; i < v.size() && static_cast<int>(i) < cap; ++i) out[i] = static_cast<int>(v[i]);
  return static_cast<int>(v.size());
}

int wale_mode(void* ale, bool difficulty) {
  auto* a = static_cast<ale::ALEInterface*>(ale);
  return static_cast<int>(difficulty ? a->getDifficulty() : a->getMode());
}

void wale_screen_size(void* ale, int* height, int* width) {
  const auto& s = static_cast<ale::ALEInterface*>(ale)->getScreen();
  *height = static_cast<int>(s.height());
  *width = static_cast<int>(s.width());
}

// Grayscale (height*width bytes) or RGB (height*width*3, interleaved) screen into `out`.
void wale_screen(void* ale, bool rgb, uint8_t* out) {
  auto* a = static_cast<ale::ALEInterface*>(ale);
  const auto& s = a->getScreen();
  size_t n = s.height() * s.width();
  if (rgb)
    a->theOSystem->colourPalette().applyPaletteRGB(out, s.getArray(), n);
  else
    a->theOSystem->colourPalette().applyPaletteGrayscale(out, s.getArray(), n);
}

// The screen as palette indices (height*width bytes, what the TIA emits) into `out`.
void wale_screen_indices(void* ale, uint8_t* out) {
  const auto& s = static_cast<ale::ALEInterface*>(ale)->getScreen();
  std::memcpy(out, s.getArray(), s.height() * s.width());
}

// ALE's grayscale value of each palette index into `out` (256 bytes). The TIA only emits even
// indices (bit 0 of its colour registers is unused); odd ones get their even neighbour's value.
void wale_gray_palette(void* ale, uint8_t* out) {
  uint8_t src[256];
  for (int i = 0; i < 256; ++i) src[i] = static_cast<uint8_t>(i & 0xFE);
  static_cast<ale::ALEInterface*>(ale)->theOSystem->colourPalette().applyPaletteGrayscale(out, src, 256);
}

const char* wale_version() { return ALE_VERSION; }

}  // extern "C"
