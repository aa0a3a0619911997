// Which (tile, point), (cell, point) and (cell, query) pairs exist: the rules
// the CPU binning (cpu/binning.cc, cpu/point_records.cc,
// cpu/sparse_queries_forward.cc) and the CUDA binning
// (gpu/*.cu) both call, written once so that the two platforms list the same
// pairs, and the CPU sparse forward's filter of points by their centres
// (centre_grid, unused on the GPU); host-callable so that the CPU test suite
// checks them (layout_bindings.cc, tests/test_layout.py). Counts and keys
// are 64-bit: a list can outgrow 2^32 entries long before memory runs out.
#pragma once

#include <math.h>
#include <stdint.h>

#include "gmm_math.h"
#include "ranges.h"

namespace jax_gmm {

// A rectangle of tiles or cells, columns x by rows y; empty if either is.
struct Box {
  Range x, y;
  GMM_HD bool empty() const { return x.empty() || y.empty(); }
  // Cells in the box, numbered y * cells_x + x on a grid cells_x wide.
  GMM_HD int64_t count() const { return empty() ? 0 : (x.hi - x.lo + 1) * (y.hi - y.lo + 1); }
};

GMM_HD Box empty_box() { return {{1, 0}, {1, 0}}; }

// The tiles of side `side` that point g's pixel box overlaps on an H x W
// image; empty for an invalid point or one that reaches no pixel.
template <typename T>
GMM_HD Box tile_box(const Gaussian<T>& g, int64_t height, int64_t width, int64_t side) {
  if (!g.valid()) return empty_box();
  const Range cols = pixel_range(g.x, g.box_x, width);
  const Range rows = pixel_range(g.y, g.box_y, height);
  if (cols.empty() || rows.empty()) return empty_box();
  return {{cols.lo / side, cols.hi / side}, {rows.lo / side, rows.hi / side}};
}

// Tiles along an axis of `pixels` pixels.
GMM_HD int64_t tiles_along(int64_t pixels, int64_t side) { return (pixels + side - 1) / side; }

// A closed interval [lo, hi] of doubles; empty unless lo <= hi. The layout is
// worked out in double, so that float queries near +-3.4e38 cannot overflow
// a span or a cell count.
struct Interval {
  double lo, hi;
  GMM_HD bool empty() const { return !(lo <= hi); }
  GMM_HD bool contains(double v) const { return lo <= v && v <= hi; }
};

GMM_HD Interval no_interval() { return {INFINITY, -INFINITY}; }

GMM_HD Interval hull(Interval a, Interval b) {
  return {a.lo < b.lo ? a.lo : b.lo, a.hi > b.hi ? a.hi : b.hi};
}

// What the cell layout needs from the points, combined over all of them in
// any grouping (the GPU reduces it in blocks): the box of every point's
// reach, the sum and number of the finite box half-sides (a point's radius
// is the larger of its two), and the largest radius, inf if any is. Every
// field is eight bytes, so a record has no padding.
struct PointReach {
  Interval x, y;
  double radius_sum;
  int64_t finite_radii;
  double widest;
};

GMM_HD PointReach no_reach() { return {no_interval(), no_interval(), 0.0, 0, 0.0}; }

GMM_HD PointReach combine(const PointReach& a, const PointReach& b) {
  return {hull(a.x, b.x), hull(a.y, b.y), a.radius_sum + b.radius_sum,
          a.finite_radii + b.finite_radii, a.widest > b.widest ? a.widest : b.widest};
}

// One point's reach from its box fields (Gaussian: valid, x, y, box_x,
// box_y): its bounding box, [x - rx, x + rx] by [y - ry, y + ry]; nothing for
// an invalid point. An infinite side reaches every query. On the fields
// rather than the record for vector loops that gather them first
// (cpu/binning.h, GaussianBlock): GCC does not vectorise reads of records.
GMM_HD PointReach box_reach(bool valid, double x, double y, double rx, double ry) {
  if (!valid) return no_reach();
  const double r = rx > ry ? rx : ry;
  const bool finite = is_finite(r);
  return {{x - rx, x + rx}, {y - ry, y + ry}, finite ? r : 0.0, finite ? 1 : 0, r};
}

template <typename T>
GMM_HD PointReach point_reach(const Gaussian<T>& g) {
  return box_reach(g.valid(), g.x, g.y, g.box_x, g.box_y);
}

// Whether some point's box reaches the query (x, y): only those get a cell.
template <typename T>
GMM_HD bool query_reachable(const PointReach& reach, T x, T y) {
  return is_finite(x) && is_finite(y) && reach.x.contains(x) && reach.y.contains(y);
}

// A uniform grid of square cells: cell (kx, ky) holds origin + k * cell <=
// v < origin + (k + 1) * cell. cells_x = cells_y = 0 when no query is in
// reach of a point: then every output is 0 and no pair exists.
struct CellLayout {
  double origin_x, origin_y, cell;
  int64_t cells_x, cells_y;
  GMM_HD int64_t cells() const { return cells_x * cells_y; }
};

// A layout of no cells, where there is nothing to lay out.
GMM_HD CellLayout no_cells() { return {0.0, 0.0, 1.0, 0, 0}; }

// Cap on cells: keeps memory O(M) when queries are spread far wider than the
// cutoff radius.
GMM_HD int64_t max_cells(int64_t m) { return m > 512 ? 2 * m : 1024; }

// Cell side in mean box radii. The CPU walks each cell's queries in vector
// loops, and wider cells mean fewer (cell, point) pairs to list and set up:
// 1.5 ran 15-20% faster than 1 at 1M queries, forward and backward, with 1.25
// and 1.75 within noise of it (a 1,024-query call is capped by max_cells and
// unchanged). The GPU's has not been tuned: it has never run on a GPU.
constexpr double kCellRadiiCpu = 1.5;
constexpr double kCellRadiiGpu = 1.0;

// The grid over the box (qx, qy) of the reachable queries, with cells about
// `radii` mean box radii wide, at most max_cells(m) of them. Spanning only the
// reachable queries means a far outlier query neither stretches the cells
// (cost O(N M)) nor overflows the arithmetic.
GMM_HD CellLayout cell_layout(Interval qx, Interval qy, const PointReach& reach, int64_t m,
                              double radii) {
  if (qx.empty() || qy.empty()) return no_cells();
  const double span_x = qx.hi - qx.lo, span_y = qy.hi - qy.lo;
  const double span = span_x > span_y ? span_x : span_y;
  const double mean_radius = reach.finite_radii ? reach.radius_sum / double(reach.finite_radii)
                                                : span;  // every box infinite: one cell
  double cell = radii * mean_radius;
  if (span * 1e-6 > cell) cell = span * 1e-6;
  if (1e-300 > cell) cell = 1e-300;
  const double limit = double(max_cells(m));
  if (!((floor(span_x / cell) + 1) * (floor(span_y / cell) + 1) <= limit)) {
    cell = span / floor(sqrt(limit)) * 1.0001;
  }
  if (!is_finite(cell)) cell = INFINITY;  // a span beyond double's range: one cell
  const auto count = [cell](double extent) {
    const double c = floor(extent / cell) + 1;
    return c >= 1 ? static_cast<int64_t>(c) : int64_t{1};  // c is NaN for inf / inf
  };
  return {qx.lo, qy.lo, cell, count(span_x), count(span_y)};
}

// A grid for telling, from a point's centre alone, that its box reaches no
// query (cpu/sparse_queries_forward.cc): square cells of at least 1 / k of
// `widest`, the largest box half-side, widened by a relative margin far
// above double rounding, over a box (qx, qy) that holds the listed queries,
// with k + 1 cells to spare on each side, at most `limit` cells. A point
// whose box holds a query then has its centre within k cells of the
// query's (grid_cell) along each axis, inside the grid: the centres'
// offsets from the origin, divided by the cell, differ by less than k (1 -
// 1e-6) before rounding, and by less than k after it while there are fewer
// than 10^9 cells along an axis. No grid (zero cells) where the query box
// is empty, a point's box or the cell is not finite, the grid's far edge overflows,
// limit is below (2 k + 4)^2, or the queries lie so far from the origin that
// a cell is below 2^-32 of their coordinates (then the cells to spare could
// round away).
GMM_HD CellLayout centre_grid(Interval qx, Interval qy, double widest, int k, int64_t limit) {
  if (qx.empty() || qy.empty() || !is_finite(widest)) return no_cells();
  const double span_x = qx.hi - qx.lo, span_y = qy.hi - qy.lo;
  const double span = span_x > span_y ? span_x : span_y;
  const double spare = k + 1.0;
  // Cells inside the spare ones along an axis, bar one, so that there are at
  // most sqrt(limit) in all.
  const double inner = floor(sqrt(double(limit))) - 2.0 * spare - 1.0;
  if (!(inner >= 1.0)) return no_cells();
  double cell = widest / k * (1.0 + 1e-6);
  if (span / inner > cell) cell = span / inner;
  if (1e-300 > cell) cell = 1e-300;  // widest 0, no valid point: only through the test binding
  // a span beyond double's range (the cast below needs this)
  if (!is_finite(cell)) return no_cells();
  const int64_t border = 2 * k + 3;
  const CellLayout l = {qx.lo - spare * cell, qy.lo - spare * cell, cell,
                        static_cast<int64_t>(floor(span_x / cell)) + border,
                        static_cast<int64_t>(floor(span_y / cell)) + border};
  const double ax = abs_value(qx.lo) > abs_value(qx.hi) ? abs_value(qx.lo) : abs_value(qx.hi);
  const double ay = abs_value(qy.lo) > abs_value(qy.hi) ? abs_value(qy.lo) : abs_value(qy.hi);
  const double extent = ax > ay ? ax : ay;
  const bool conditioned = extent <= cell * 0x1p32 &&
                           is_finite(l.origin_x + double(l.cells_x) * cell) &&
                           is_finite(l.origin_y + double(l.cells_y) * cell);
  return conditioned ? l : no_cells();
}

// The cell of the centre (x, y) on grid l (y * cells_x + x), or -1 if it is
// in none: as cell_index along each axis, but with selects rather than
// branches, so that a vector loop over points can take it, and by the
// cell's inverse, whose rounding centre_grid's margin covers. Index may be
// int32_t where l.cells() < 2^31: AVX2 converts double to int32 in vectors,
// to int64 only with AVX-512.
template <typename Index = int64_t>
GMM_HD Index grid_cell(const CellLayout& l, double x, double y) {
  const double inverse = 1.0 / l.cell;
  const double u = (x - l.origin_x) * inverse, v = (y - l.origin_y) * inverse;
  const bool inside = (u >= 0.0) & (u < double(l.cells_x)) & (v >= 0.0) & (v < double(l.cells_y));
  // converted only where inside: NaN or out of Index's range has no conversion
  const Index kx = static_cast<Index>(inside ? u : 0.0);
  const Index ky = static_cast<Index>(inside ? v : 0.0);
  return inside ? ky * static_cast<Index>(l.cells_x) + kx : Index(-1);
}

// The cell of a query (y * cells_x + x), or -1 if it is in none: not
// reachable, or, by rounding, just past the grid.
template <typename T>
GMM_HD int64_t query_cell(const CellLayout& l, const PointReach& reach, T x, T y) {
  if (l.cells() == 0 || !query_reachable(reach, x, y)) return -1;
  // A span beyond double's range: the one cell (v - origin may overflow, and
  // inf / inf is NaN, which cell_index reads as no cell).
  if (!is_finite(l.cell)) return 0;
  const int64_t kx = cell_index<double>(x, l.origin_x, l.cell, l.cells_x);
  const int64_t ky = cell_index<double>(y, l.origin_y, l.cell, l.cells_y);
  return kx < 0 || ky < 0 ? -1 : ky * l.cells_x + kx;
}

// The cells that a point's box [x - rx, x + rx] by [y - ry, y + ry]
// overlaps, from its box fields as box_reach; empty for an invalid point.
GMM_HD Box box_cells(const CellLayout& l, bool valid, double x, double y, double rx, double ry) {
  if (!valid || l.cells() == 0) return empty_box();
  if (!is_finite(l.cell)) return {{0, 0}, {0, 0}};  // the one cell, as in query_cell
  return {cell_range<double>(x - rx, x + rx, l.origin_x, l.cell, l.cells_x),
          cell_range<double>(y - ry, y + ry, l.origin_y, l.cell, l.cells_y)};
}

// The cells point g's bounding box overlaps; empty for an invalid point.
template <typename T>
GMM_HD Box point_cells(const CellLayout& l, const Gaussian<T>& g) {
  return box_cells(l, g.valid(), g.x, g.y, g.box_x, g.box_y);
}

// Where the list of cell `cell` starts among `entries` pairs sorted by key:
// the first j with keys[j] >= cell (entries if none).
template <typename K>
GMM_HD int64_t list_start(const K* keys, int64_t entries, int64_t cell) {
  int64_t lo = 0, hi = entries;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (static_cast<int64_t>(keys[mid]) < cell) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

}  // namespace jax_gmm
