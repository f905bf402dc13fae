// my_generator.cxx: straight-track toy events for the SuperNEMO tracker, the ROOT macro.
//
// Usage (compiled with ACLiC):
//   root -b -q -l 'my_generator/my_generator.cxx+(2, 1000, "data/my_generator/2/my_generator", 0, 7)'
// writes <prefix>_t<lines>_<file_id>.root with TTree hit_tree, one entry per event of <lines> tracks.
// seed = -1 draws the seed from std::random_device. sides = 2 (default) puts each track on a random
// side, sides = 1 puts every track on side 1 as the original macro did. The macro returns 0 on
// success, 2 for a bad argument and 1 when the file cannot be written; `root -b -q` exits with that
// status. It models no detector effects (noise, dead cells, ...): those are the Python twin's flags.
//
// Same physics as its vectorised twin my_generator/my_generator.py (see its docstring), in cell
// units (1 = 44 mm): layer L spans u in [L, L+1] from the tracker's inner face, column C spans
// [C, C+1]; the line is col = x_event + tan(angle_top) u, z = z_event + tan(angle_front) u; a cell is
// hit when the closest point of the line to its wire (top view) lies inside the cell square and
// inside the chamber height. Tracks with fewer than 5 hits are redrawn.
//
// Fixed with respect to the original: grid_side and calo_side are filled; the chamber half height
// is 1500 mm (snemo/geometry.py) instead of 1550 mm; the calorimeter type, wall, module (-1: not
// modelled) and the generating line (unit vector dir*, point* on the tracker's inner face, mm) are
// written under the branch names of the Python twin; the file is written as <name>.tmp and renamed.
// The constants below mirror snemo/geometry.py (a test checks that they agree).

#include <TFile.h>
#include <TSystem.h>
#include <TTree.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr int kLayers = 9;                  // geometry.N_LAYERS
constexpr int kColumns = 113;               // geometry.N_COLUMNS
constexpr double kCellPitch = 44.0;         // mm, geometry.CELL_PITCH
constexpr double kTrackerHalfZ = 1500.0;    // mm, geometry.TRACKER_HALF_Z
constexpr double kTrackerMinAbsX = 31.0;    // mm, geometry.TRACKER_MIN_ABS_X
constexpr double kTrackerMinY = -2486.0;    // mm, geometry.TRACKER_MIN_Y
constexpr int kMainColumns = 20;            // geometry.MAIN_COLUMNS
constexpr int kMainRows = 13;               // geometry.MAIN_ROWS
constexpr int kMinHits = 5;
constexpr double kAngleMin = 0.01;          // rad
constexpr double kAngleMax = 3.131592;      // rad
constexpr double kHalfHeight = kTrackerHalfZ / kCellPitch;  // chamber half height in cell units
constexpr double kWallU = kLayers;          // u of the tracker's outer face: the calorimeter cell
constexpr int kTypeMain = 0, kTypeXwall = 1, kTypeGveto = 2;

struct Line {
  double x, z, slope_top, slope_front;
  int side;
};

struct Hit {
  int layer, column;
  double wirez, radius;  // mm
};

// Cells hit by the line, ordered by layer then column.
std::vector<Hit> track_hits(const Line& line) {
  std::vector<Hit> hits;
  const double s = line.slope_top;
  for (int layer = 0; layer < kLayers; ++layer) {
    const double wire_u = layer + 0.5;
    for (int column = 0; column < kColumns; ++column) {
      const double wire_col = column + 0.5;
      const double u = (wire_u + s * (wire_col - line.x)) / (1.0 + s * s);  // closest point
      const double du = u - wire_u;
      const double dcol = line.x + s * u - wire_col;
      const double z = line.z + line.slope_front * u;
      if (std::fabs(du) < 0.5 && std::fabs(dcol) < 0.5 && std::fabs(z) < kHalfHeight)
        hits.push_back({layer, column, z * kCellPitch, std::hypot(du, dcol) * kCellPitch});
    }
  }
  return hits;
}

struct Calo {
  int column, row, type, wall;
};

// Grid cell of the line at u = 9 (22 x 15 convention of the original); a corner cell gets the
// type of the boundary (columns or chamber height) that the line crosses first.
Calo calorimeter(const Line& line) {
  const double width = kColumns;
  const double col = line.x + line.slope_top * kWallU;
  const double z = line.z + line.slope_front * kWallU;
  Calo calo{};
  if (col < 0) calo.column = 0;
  else if (col > width) calo.column = kMainColumns + 1;
  else calo.column = std::min(static_cast<int>(col / width * kMainColumns + 1), kMainColumns);
  if (z < -kHalfHeight) calo.row = 0;
  else if (z > kHalfHeight) calo.row = kMainRows + 1;
  else calo.row = std::min(static_cast<int>((kHalfHeight + z) / (2 * kHalfHeight) * kMainRows + 1), kMainRows);
  const bool beyond_col = calo.column == 0 || calo.column == kMainColumns + 1;
  const bool beyond_row = calo.row == 0 || calo.row == kMainRows + 1;
  const double u_col = (line.slope_top > 0 ? width - line.x : -line.x) / line.slope_top;
  const double u_z = (line.slope_front > 0 ? kHalfHeight - line.z : -kHalfHeight - line.z) / line.slope_front;
  if (beyond_col && !(beyond_row && u_z < u_col)) {
    calo.type = kTypeXwall;
    calo.wall = calo.column > 0 ? 1 : 0;
  } else if (beyond_row) {
    calo.type = kTypeGveto;
    calo.wall = calo.row > 0 ? 1 : 0;
  } else {
    calo.type = kTypeMain;
    calo.wall = -1;
  }
  return calo;
}

}  // namespace

int my_generator(int lines, int events, std::string prefix, int file_id, int seed = -1, int sides = 2) {
  if (lines < 1 || events < 0 || file_id < 0 || seed < -1 || (sides != 1 && sides != 2)) {
    std::cerr << "my_generator: bad argument: need lines >= 1, events >= 0, file_id >= 0, seed >= -1, sides 1 or 2; "
              << "got lines " << lines << ", events " << events << ", file_id " << file_id << ", seed " << seed
              << ", sides " << sides << std::endl;
    return 2;
  }
  const auto start = std::chrono::steady_clock::now();
  std::mt19937_64 rng(seed == -1 ? std::random_device{}() : static_cast<unsigned>(seed));
  std::uniform_real_distribution<double> angle(kAngleMin, kAngleMax);
  std::uniform_real_distribution<double> position(0.0, kColumns);
  std::uniform_real_distribution<double> height(-kHalfHeight, kHalfHeight);
  std::uniform_int_distribution<int> coin(0, 1);

  const std::string name = prefix + "_t" + std::to_string(lines) + "_" + std::to_string(file_id) + ".root";
  const std::string tmp = name + ".tmp";
  gSystem->mkdir(gSystem->GetDirName(name.c_str()).Data(), kTRUE);
  TFile file(tmp.c_str(), "RECREATE");
  if (file.IsZombie()) {
    std::cerr << "my_generator: cannot create " << tmp << std::endl;
    return 1;
  }
  auto* tree = new TTree("hit_tree", "SuperNEMO toy events (my_generator.cxx)");  // owned by the file
  std::vector<int> grid_side, grid_layer, grid_column, track_split;
  std::vector<int> calo_side, calo_column, calo_row, calo_type, calo_wall, calo_om;
  std::vector<double> wirez, radius, dirx, diry, dirz, pointx, pointy, pointz;
  for (auto& [branch, values] : std::vector<std::pair<const char*, std::vector<int>*>>{
           {"grid_side", &grid_side}, {"grid_layer", &grid_layer}, {"grid_column", &grid_column},
           {"track_split", &track_split}, {"calo_side", &calo_side}, {"calo_column", &calo_column},
           {"calo_row", &calo_row}, {"calo_type", &calo_type}, {"calo_wall", &calo_wall},
           {"calo_om", &calo_om}})
    tree->Branch(branch, values);
  for (auto& [branch, values] : std::vector<std::pair<const char*, std::vector<double>*>>{
           {"wirez", &wirez}, {"radius", &radius}, {"dirx", &dirx}, {"diry", &diry}, {"dirz", &dirz},
           {"pointx", &pointx}, {"pointy", &pointy}, {"pointz", &pointz}})
    tree->Branch(branch, values);

  for (int event = 0; event < events; ++event) {
    for (auto* v : {&grid_side, &grid_layer, &grid_column, &track_split, &calo_side, &calo_column, &calo_row,
                    &calo_type, &calo_wall, &calo_om})
      v->clear();
    for (auto* v : {&wirez, &radius, &dirx, &diry, &dirz, &pointx, &pointy, &pointz}) v->clear();
    for (int track = 0; track < lines; ++track) {
      Line line{};
      std::vector<Hit> hits;
      do {
        line.slope_top = std::tan(angle(rng));
        line.slope_front = std::tan(angle(rng));
        line.x = position(rng);
        line.z = height(rng);
        line.side = sides == 2 ? coin(rng) : 1;
        hits = track_hits(line);
      } while (static_cast<int>(hits.size()) < kMinHits);
      for (const Hit& hit : hits) {
        grid_side.push_back(line.side);
        grid_layer.push_back(hit.layer);
        grid_column.push_back(hit.column);
        wirez.push_back(hit.wirez);
        radius.push_back(hit.radius);
      }
      track_split.push_back(static_cast<int>(grid_layer.size()));
      const Calo calo = calorimeter(line);
      calo_side.push_back(line.side);
      calo_column.push_back(calo.column);
      calo_row.push_back(calo.row);
      calo_type.push_back(calo.type);
      calo_wall.push_back(calo.wall);
      calo_om.push_back(-1);
      const double sign = line.side == 0 ? -1.0 : 1.0;
      const double norm = std::sqrt(1.0 + line.slope_top * line.slope_top + line.slope_front * line.slope_front);
      dirx.push_back(sign / norm);
      diry.push_back(line.slope_top / norm);
      dirz.push_back(line.slope_front / norm);
      pointx.push_back(sign * kTrackerMinAbsX);
      pointy.push_back(kTrackerMinY + kCellPitch * line.x);
      pointz.push_back(kCellPitch * line.z);
    }
    tree->Fill();
  }
  file.Write();
  file.Close();
  if (std::rename(tmp.c_str(), name.c_str()) != 0) {
    std::cerr << "my_generator: cannot rename " << tmp << " to " << name << std::endl;
    return 1;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "my_generator: wrote " << events << " events of " << lines << " tracks to " << name << " in "
            << seconds << " s (" << (seconds > 0 ? events / seconds : 0.0) << " events/s)" << std::endl;
  return 0;
}
