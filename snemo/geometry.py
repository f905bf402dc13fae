"""SuperNEMO demonstrator geometry: every constant and index conversion the toolkit uses.

Coordinates are in millimetres, in the demonstrator frame: x across the source foil (side 0 is
x < 0, side 1 is x > 0), y along the foil (tracker columns), z vertical (along the wires).
Sources: Falaise geometry files, SN-IEgenerator ``utility/geometrycheck.py``, the original
``my_generator.cxx`` calorimeter-grid convention.

Nothing else in the repository hard-codes the numbers below; import them from here.
"""

from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------------------------
# Tracker: 2 sides x 9 layers x 113 columns of Geiger drift cells
# --------------------------------------------------------------------------------------------
N_SIDES = 2
N_LAYERS = 9
N_COLUMNS = 113
N_CELLS = N_SIDES * N_LAYERS * N_COLUMNS  # 2034

CELL_PITCH = 44.0  # mm, square cell side, same across layers and columns
CELL_HALF = CELL_PITCH / 2.0  # mm
MAX_DRIFT_RADIUS = CELL_HALF  # mm, radius of the circle inscribed in a cell
MAX_HIT_RADIUS = CELL_HALF * 2 ** 0.5  # mm, 31.1: distance from the wire to a corner of the square cell
LAYER0_WIRE_ABS_X = 53.0  # mm, |x| of the wires of layer 0 (next to the foil)
COLUMN0_WIRE_Y = -2464.0  # mm, y of the wires of column 0
TRACKER_HALF_Z = 1500.0  # mm, cells are 3 m long, z in [-1500, 1500]
TRACKER_MIN_Y = COLUMN0_WIRE_Y - CELL_HALF  # mm, -2486
TRACKER_MAX_Y = COLUMN0_WIRE_Y + CELL_PITCH * (N_COLUMNS - 1) + CELL_HALF  # mm, +2486
TRACKER_MIN_ABS_X = LAYER0_WIRE_ABS_X - CELL_HALF  # mm, 31: inner face of layer 0
TRACKER_MAX_ABS_X = LAYER0_WIRE_ABS_X + CELL_PITCH * (N_LAYERS - 1) + CELL_HALF  # mm, 427

# --------------------------------------------------------------------------------------------
# Image views (hits -> images). Owned by datasets/views.py; the sizes live here.
# --------------------------------------------------------------------------------------------
TOP_ROWS = N_SIDES * N_LAYERS  # 18: row = 8 - layer on side 0, 9 + layer on side 1
Z_BIN_WIDTH = 100.0  # mm
N_Z_BINS = int(round(2 * TRACKER_HALF_Z / Z_BIN_WIDTH))  # 30

TOP_SHAPE = (TOP_ROWS, N_COLUMNS)  # (18, 113)
SIDE_SHAPE = (N_Z_BINS, N_COLUMNS)  # (30, 113)
FRONT_SHAPE = (N_Z_BINS, TOP_ROWS)  # (30, 18)
VOXEL_SHAPE = (TOP_ROWS, N_COLUMNS, N_Z_BINS)  # (18, 113, 30)

# --------------------------------------------------------------------------------------------
# Calorimeter: 712 optical modules
# --------------------------------------------------------------------------------------------
CALO_TYPE_MAIN = 0
CALO_TYPE_XWALL = 1
CALO_TYPE_GVETO = 2

MAIN_COLUMNS = 20
MAIN_ROWS = 13
MAIN_PITCH = 259.0  # mm
MAIN_FRONT_ABS_X = 435.0  # mm, |x| of the scintillator front faces
MAIN_MIN_Y = -2590.0  # mm, lower y edge of column 0
MAIN_MIN_Z = -1683.5  # mm, lower z edge of row 0

XWALL_WALLS = 2  # per side: wall 0 at y < 0, wall 1 at y > 0
XWALL_COLUMNS = 2  # per wall, in depth (x)
XWALL_ROWS = 16
XWALL_ABS_Y = 2505.5  # mm
XWALL_ROW_PITCH = 212.0  # mm
XWALL_MIN_Z = -1696.0  # mm, lower z edge of row 0
XWALL_MIN_ABS_X = 29.0  # mm, |x| where X-wall column 0 starts (column = depth from the foil)
XWALL_DEPTH_PITCH = 203.0  # mm, depth of an X-wall column (202 mm module + 1 mm gap)

GVETO_WALLS = 2  # per side: wall 0 at z < 0 (bottom), wall 1 at z > 0 (top)
GVETO_COLUMNS = 16
GVETO_ABS_Z = 1550.0  # mm
GVETO_PITCH = 311.5  # mm
GVETO_MIN_Y = -2497.25  # mm, lower y edge of column 0
GVETO_BLOCK_GAP = 10.5  # mm, extra gap between columns 7 and 8
GVETO_BLOCK_COLUMNS = GVETO_COLUMNS // 2  # columns per block of a wall (8)
GVETO_BLOCK0_MAX_Y = GVETO_MIN_Y + GVETO_BLOCK_COLUMNS * GVETO_PITCH  # mm, upper y edge of column 7
GVETO_BLOCK1_MIN_Y = GVETO_BLOCK0_MAX_Y + GVETO_BLOCK_GAP  # mm, lower y edge of column 8
GVETO_MAX_Y = GVETO_BLOCK1_MIN_Y + GVETO_BLOCK_COLUMNS * GVETO_PITCH  # mm, upper y edge of column 15

N_MAIN_OM = N_SIDES * MAIN_COLUMNS * MAIN_ROWS  # 520
N_XWALL_OM = N_SIDES * XWALL_WALLS * XWALL_COLUMNS * XWALL_ROWS  # 128
N_GVETO_OM = N_SIDES * GVETO_WALLS * GVETO_COLUMNS  # 64
N_OM = N_MAIN_OM + N_XWALL_OM + N_GVETO_OM  # 712

# The label grid of the calorimeter association task, per side (convention of my_generator.cxx):
# columns 1..20 and rows 1..13 are the main wall; column 0 / 21 are the X-walls at negative /
# positive y; row 0 / 14 are the bottom / top gamma veto.
CALO_GRID_COLUMNS = MAIN_COLUMNS + 2  # 22
CALO_GRID_ROWS = MAIN_ROWS + 2  # 15
CALO_GRID_CELLS = CALO_GRID_COLUMNS * CALO_GRID_ROWS  # 330


def toy_grid_cell(column, z):
    """Grid (column, row), int64 arrays, of where a toy track meets the wall (my_generator.cxx).

    ``column``: position along the foil in cell units (column C spans [C, C + 1]); ``z``: height
    in cell units (44 mm). Column 0 / 21 below 0 / beyond 113, else int(column / 113 * 20 + 1);
    row 0 / 14 below / above the chamber's half height (1500 mm), else
    int((half + z) / (2 half) * 13 + 1); both clipped to the main wall's range at its exact edges.
    """
    column, z = np.asarray(column, dtype=np.float64), np.asarray(z, dtype=np.float64)
    width, half = float(N_COLUMNS), TRACKER_HALF_Z / CELL_PITCH
    main_column = np.clip(np.floor(np.clip(column, 0.0, width) / width * MAIN_COLUMNS + 1), 1, MAIN_COLUMNS)
    main_row = np.clip(np.floor((half + np.clip(z, -half, half)) / (2 * half) * MAIN_ROWS + 1), 1, MAIN_ROWS)
    grid_column = np.where(column < 0, 0, np.where(column > width, CALO_GRID_COLUMNS - 1, main_column))
    grid_row = np.where(z < -half, 0, np.where(z > half, CALO_GRID_ROWS - 1, main_row))
    return grid_column.astype(np.int64), grid_row.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Tracker conversions (all vectorised: scalars or NumPy arrays in, arrays out)
# --------------------------------------------------------------------------------------------
def wire_x(side, layer):
    """x of the wire of (side, layer), mm. Side 0 is negative x."""
    side = np.asarray(side)
    abs_x = LAYER0_WIRE_ABS_X + CELL_PITCH * np.asarray(layer, dtype=np.float64)
    return np.where(side == 0, -abs_x, abs_x)


def wire_y(column):
    """y of the wires of ``column``, mm."""
    return COLUMN0_WIRE_Y + CELL_PITCH * np.asarray(column, dtype=np.float64)


def layer_of_x(x):
    """(side, layer) of the cell band that contains x (mm); layer is -1 outside the tracker."""
    x = np.asarray(x, dtype=np.float64)
    side = (x > 0).astype(np.int8)
    layer = np.floor((np.abs(x) - TRACKER_MIN_ABS_X) / CELL_PITCH).astype(np.int64)
    layer = np.where((layer >= 0) & (layer < N_LAYERS), layer, -1)
    return side, layer


def column_of_y(y):
    """Column of the cell band that contains y (mm); -1 outside the tracker."""
    y = np.asarray(y, dtype=np.float64)
    column = np.floor((y - TRACKER_MIN_Y) / CELL_PITCH).astype(np.int64)
    return np.where((column >= 0) & (column < N_COLUMNS), column, -1)


def cell_id(side, layer, column):
    """Flat cell number 0..2033 = (side * 9 + layer) * 113 + column."""
    side = np.asarray(side, dtype=np.int64)
    return (side * N_LAYERS + np.asarray(layer, dtype=np.int64)) * N_COLUMNS + np.asarray(column, dtype=np.int64)


def cell_from_id(cid):
    """Inverse of :func:`cell_id`: returns (side, layer, column)."""
    cid = np.asarray(cid, dtype=np.int64)
    return cid // (N_LAYERS * N_COLUMNS), (cid // N_COLUMNS) % N_LAYERS, cid % N_COLUMNS


def top_row(side, layer):
    """Row of the top view, 0..17: 8 - layer on side 0, 9 + layer on side 1 (foil between 8 and 9)."""
    side = np.asarray(side, dtype=np.int64)
    layer = np.asarray(layer, dtype=np.int64)
    return np.where(side == 0, N_LAYERS - 1 - layer, N_LAYERS + layer)


def z_bin(z):
    """z bin 0..29 of the side and front views: floor((clip(z, -1500, 1499.9) + 1500) / 100)."""
    z = np.clip(np.asarray(z, dtype=np.float64), -TRACKER_HALF_Z, TRACKER_HALF_Z - 0.1)
    return np.floor((z + TRACKER_HALF_Z) / Z_BIN_WIDTH).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Calorimeter conversions
# --------------------------------------------------------------------------------------------
def main_om(side, column, row):
    """Optical-module number of a main-wall module: 260 * side + 13 * column + row."""
    return MAIN_COLUMNS * MAIN_ROWS * np.asarray(side) + MAIN_ROWS * np.asarray(column) + np.asarray(row)


def xwall_om(side, wall, column, row):
    """Optical-module number of an X-wall module: 520 + 64 * side + 32 * wall + 16 * column + row."""
    return (N_MAIN_OM + 64 * np.asarray(side) + 32 * np.asarray(wall) + XWALL_ROWS * np.asarray(column)
            + np.asarray(row))


def gveto_om(side, wall, column):
    """Optical-module number of a gamma-veto module: 648 + 32 * side + 16 * wall + column."""
    return N_MAIN_OM + N_XWALL_OM + 32 * np.asarray(side) + GVETO_COLUMNS * np.asarray(wall) + np.asarray(column)


def om_number(calo_type, side, wall, column, row):
    """Optical-module number 0..711 for modules of any type (arrays broadcast); -1 where type < 0."""
    calo_type = np.asarray(calo_type)
    wall = np.maximum(np.asarray(wall), 0)
    return np.where(calo_type == CALO_TYPE_MAIN, main_om(side, column, row),
                    np.where(calo_type == CALO_TYPE_XWALL, xwall_om(side, wall, column, row),
                             np.where(calo_type == CALO_TYPE_GVETO, gveto_om(side, wall, column), -1)))


def main_row_of_z(z):
    """Main-wall row 0..12 that spans height z (mm), clipped to the wall."""
    row = np.floor((np.asarray(z, dtype=np.float64) - MAIN_MIN_Z) / MAIN_PITCH).astype(np.int64)
    return np.clip(row, 0, MAIN_ROWS - 1)


def main_column_of_y(y):
    """Main-wall column 0..19 that spans y (mm), clipped to the wall."""
    column = np.floor((np.asarray(y, dtype=np.float64) - MAIN_MIN_Y) / MAIN_PITCH).astype(np.int64)
    return np.clip(column, 0, MAIN_COLUMNS - 1)


def xwall_row_centre_z(row):
    """z of the centre of X-wall row ``row``, mm."""
    return XWALL_MIN_Z + XWALL_ROW_PITCH * (np.asarray(row, dtype=np.float64) + 0.5)


def gveto_column_centre_y(column):
    """y of the centre of gamma-veto column ``column``, mm (second block of 8 is shifted by 10.5 mm)."""
    column = np.asarray(column, dtype=np.float64)
    return GVETO_MIN_Y + GVETO_PITCH * (column + 0.5) + np.where(column >= 8, GVETO_BLOCK_GAP, 0.0)


def calo_grid_cell(calo_type, wall, column, row):
    """Map a module (type, wall, column, row) onto the 22 x 15 label grid of its side.

    Main wall: grid (column + 1, row + 1). X-wall: grid column 0 (wall 0, y < 0) or 21 (wall 1),
    grid row = 1 + the main-wall row at the module's height. Gamma veto: grid row 0 (wall 0,
    bottom) or 14 (wall 1, top), grid column = 1 + the main-wall column at the module's y.
    Returns (grid_column, grid_row) as int64 arrays.
    """
    calo_type = np.asarray(calo_type)
    wall = np.asarray(wall)
    column = np.asarray(column)
    row = np.asarray(row)
    grid_column = np.where(
        calo_type == CALO_TYPE_MAIN, column + 1,
        np.where(calo_type == CALO_TYPE_XWALL, np.where(wall == 0, 0, CALO_GRID_COLUMNS - 1),
                 1 + main_column_of_y(gveto_column_centre_y(column))))
    grid_row = np.where(
        calo_type == CALO_TYPE_MAIN, row + 1,
        np.where(calo_type == CALO_TYPE_XWALL, 1 + main_row_of_z(xwall_row_centre_z(row)),
                 np.where(wall == 0, 0, CALO_GRID_ROWS - 1)))
    return grid_column.astype(np.int64), grid_row.astype(np.int64)


def calo_grid_index(grid_column, grid_row):
    """Flat label index 0..329 of a grid cell: grid_row * 22 + grid_column."""
    return np.asarray(grid_row, dtype=np.int64) * CALO_GRID_COLUMNS + np.asarray(grid_column, dtype=np.int64)
