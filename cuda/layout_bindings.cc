// Test-only module _layout: the pair-existence rules of layout.h, which the
// CPU and CUDA binnings both run, called from Python so that
// tests/test_layout.py can check them against brute force without a GPU.
// Every function takes the raw inputs (points, scale, truncate, queries) and
// builds the Gaussians as the kernels do; scale is (N, 3), the Cholesky
// factors (l11, l21, l22) that the kernels take.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <vector>

#include "gmm_math.h"
#include "layout.h"

namespace nb = nanobind;

namespace jax_gmm {
namespace {

template <typename T>
using Array = nb::ndarray<const T, nb::c_contig, nb::device::cpu>;

template <typename T>
std::vector<Gaussian<T>> gaussians(Array<T> points, Array<T> scale, double truncate) {
  if (points.ndim() != 2 || points.shape(1) != 2 || scale.ndim() != 2 || scale.shape(1) != 3 ||
      scale.shape(0) != points.shape(0)) {
    throw nb::value_error("points must be (N, 2) and scale (N, 3)");
  }
  std::vector<Gaussian<T>> g(points.shape(0));
  const T* l = scale.data();
  for (size_t i = 0; i < g.size(); ++i) {
    g[i] = make_gaussian(points.data()[2 * i], points.data()[2 * i + 1], l[3 * i], l[3 * i + 1],
                         l[3 * i + 2], static_cast<T>(truncate));
  }
  return g;
}

void append(std::vector<int64_t>& out, const Box& b) {
  out.insert(out.end(), {b.x.lo, b.x.hi, b.y.lo, b.y.hi});
}

// Per point [x.lo, x.hi, y.lo, y.hi] of its tiles, flattened, and the total
// number of (tile, point) pairs.
template <typename T>
nb::tuple tile_boxes(Array<T> points, Array<T> scale, double truncate, int64_t height,
                     int64_t width, int64_t side) {
  std::vector<int64_t> boxes;
  int64_t pairs = 0;
  for (const Gaussian<T>& g : gaussians(points, scale, truncate)) {
    const Box b = tile_box(g, height, width, side);
    append(boxes, b);
    pairs += b.count();
  }
  return nb::make_tuple(boxes, pairs, tiles_along(width, side), tiles_along(height, side));
}

// The cell binning of arbitrary queries: the layout, each query's cell (-1
// for none), each point's cells, and the number of (cell, point) pairs.
template <typename T>
nb::dict cell_binning(Array<T> points, Array<T> scale, double truncate, Array<T> queries,
                      double radii) {
  const std::vector<Gaussian<T>> g = gaussians(points, scale, truncate);
  PointReach reach = no_reach();
  for (const Gaussian<T>& p : g) reach = combine(reach, point_reach(p));
  const int64_t m = static_cast<int64_t>(queries.shape(0));
  const T* q = queries.data();
  Interval box_x = no_interval(), box_y = no_interval();
  for (int64_t k = 0; k < m; ++k) {
    if (!query_reachable(reach, q[2 * k], q[2 * k + 1])) continue;
    box_x = hull(box_x, {double(q[2 * k]), double(q[2 * k])});
    box_y = hull(box_y, {double(q[2 * k + 1]), double(q[2 * k + 1])});
  }
  const CellLayout l = cell_layout(box_x, box_y, reach, m, radii);
  std::vector<int64_t> keys(m), boxes;
  for (int64_t k = 0; k < m; ++k) keys[k] = query_cell(l, reach, q[2 * k], q[2 * k + 1]);
  int64_t pairs = 0;
  for (const Gaussian<T>& p : g) {
    const Box b = point_cells(l, p);
    append(boxes, b);
    pairs += b.count();
  }
  nb::dict d;
  d["origin"] = nb::make_tuple(l.origin_x, l.origin_y);
  d["cell"] = l.cell;
  d["cells"] = nb::make_tuple(l.cells_x, l.cells_y);
  d["reach"] = nb::make_tuple(reach.x.lo, reach.x.hi, reach.y.lo, reach.y.hi);
  d["mean_radius"] = reach.finite_radii ? reach.radius_sum / reach.finite_radii : -1.0;
  d["widest"] = reach.widest;
  d["query_keys"] = keys;
  d["point_boxes"] = boxes;
  d["pairs"] = pairs;
  return d;
}

// cell_range(lo, hi, ...) as (lo, hi), and cell_index(lo, ...), in double.
nb::tuple cells_between(double lo, double hi, double origin, double size, int64_t count) {
  const Range r = cell_range<double>(lo, hi, origin, size, count);
  return nb::make_tuple(r.lo, r.hi, cell_index<double>(lo, origin, size, count));
}

// centre_grid over the query box [x_lo, x_hi] by [y_lo, y_hi], as (origin_x,
// origin_y, cell, cells_x, cells_y), and the grid_cell of each of centres (K, 2).
nb::tuple centre_grid_cells(double x_lo, double x_hi, double y_lo, double y_hi, double widest,
                            int k, int64_t limit, Array<double> centres) {
  const CellLayout l = centre_grid({x_lo, x_hi}, {y_lo, y_hi}, widest, k, limit);
  if (centres.ndim() != 2 || centres.shape(1) != 2) {
    throw nb::value_error("centres must be (K, 2)");
  }
  const int64_t count = static_cast<int64_t>(centres.shape(0));
  const double* c = centres.data();
  std::vector<int64_t> cells(count);
  for (int64_t i = 0; i < count; ++i) cells[i] = grid_cell(l, c[2 * i], c[2 * i + 1]);
  return nb::make_tuple(nb::make_tuple(l.origin_x, l.origin_y, l.cell, l.cells_x, l.cells_y),
                        cells);
}

// start[c] for c = 0 .. cells over keys sorted ascending.
std::vector<int64_t> list_starts(const std::vector<int64_t>& keys, int64_t cells) {
  std::vector<int64_t> start(cells + 1);
  for (int64_t c = 0; c <= cells; ++c) {
    start[c] = list_start(keys.data(), static_cast<int64_t>(keys.size()), c);
  }
  return start;
}

}  // namespace
}  // namespace jax_gmm

NB_MODULE(_layout, m) {
  using namespace jax_gmm;
  m.def("tile_boxes", &tile_boxes<float>);
  m.def("tile_boxes", &tile_boxes<double>);
  m.def("cell_binning", &cell_binning<float>);
  m.def("cell_binning", &cell_binning<double>);
  m.def("cells_between", &cells_between);
  m.def("list_starts", &list_starts);
  m.def("centre_grid_cells", &centre_grid_cells);
  m.def("max_cells", &max_cells);
  m.attr("CELL_RADII_CPU") = kCellRadiiCpu;
  m.attr("CELL_RADII_GPU") = kCellRadiiGpu;
}
