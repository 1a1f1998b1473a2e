"""The self-play game database schema (see REFERENCE.md, "The self-play game database").

Column names are those the cluster's writer creates; types are SQLite affinities.  Child
tables reference ``games(game_id) ON DELETE CASCADE``.  Two triggers keep games honest:
a game cannot be *inserted* already completed/finished unless it has >= 5 ``game_moves``,
and cannot be *updated* to completed/finished with ``total_moves < 5``; a writer therefore
inserts the game ``active``, writes its moves, then finalises it.
"""

from __future__ import annotations

SCHEMA_VERSION = 9

#: Terminal statuses (``finished`` in older files).
COMPLETED_STATUSES = ("completed", "finished")
#: Statuses from which a game may still complete later.
OPEN_STATUSES = ("waiting", "active", "paused")

#: The insert trigger's message (SQLite's RAISE takes a string literal, so it is put into SCHEMA as text).
_INSERT_WITHOUT_MOVES = (
    "Cannot insert completed game with fewer than 5 moves. Move data must be inserted before completing the game."
)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS schema_metadata (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS games (
    game_id TEXT PRIMARY KEY,
    board_type TEXT NOT NULL,
    num_players INTEGER NOT NULL,
    rng_seed INTEGER,
    created_at TEXT NOT NULL,
    completed_at TEXT,
    game_status TEXT NOT NULL,
    winner INTEGER,
    termination_reason TEXT,
    total_moves INTEGER NOT NULL DEFAULT 0,
    total_turns INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER,
    source TEXT,
    schema_version INTEGER NOT NULL DEFAULT 9,
    time_control_type TEXT DEFAULT 'none',
    initial_time_ms INTEGER,
    time_increment_ms INTEGER,
    metadata_json TEXT,
    quality_score REAL,
    quality_category TEXT,
    engine_mode TEXT,
    parity_status TEXT DEFAULT 'pending',
    parity_checked_at TEXT,
    parity_divergence_move INTEGER,
    opponent_type TEXT,
    opponent_model_id TEXT
);
CREATE INDEX IF NOT EXISTS idx_games_board_players ON games(board_type, num_players);
CREATE INDEX IF NOT EXISTS idx_games_created ON games(created_at);
CREATE INDEX IF NOT EXISTS idx_games_status ON games(game_status);

CREATE TABLE IF NOT EXISTS game_players (
    game_id TEXT NOT NULL,
    player_number INTEGER NOT NULL,
    player_type TEXT NOT NULL,
    ai_type TEXT,
    ai_difficulty INTEGER,
    ai_profile_id TEXT,
    final_eliminated_rings INTEGER,
    final_territory_spaces INTEGER,
    final_rings_in_hand INTEGER,
    PRIMARY KEY (game_id, player_number),
    FOREIGN KEY (game_id) REFERENCES games(game_id) ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS game_initial_state (
    game_id TEXT PRIMARY KEY,
    initial_state_json TEXT NOT NULL,
    compressed INTEGER DEFAULT 0,
    FOREIGN KEY (game_id) REFERENCES games(game_id) ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS game_moves (
    game_id TEXT NOT NULL,
    move_number INTEGER NOT NULL,
    turn_number INTEGER NOT NULL,
    player INTEGER NOT NULL,
    phase TEXT NOT NULL,
    move_type TEXT NOT NULL,
    move_json TEXT NOT NULL,
    timestamp TEXT,
    think_time_ms INTEGER,
    time_remaining_ms INTEGER,
    engine_eval REAL,
    engine_eval_type TEXT,
    engine_depth INTEGER,
    engine_nodes INTEGER,
    engine_pv TEXT,
    engine_time_ms INTEGER,
    move_probs TEXT,
    search_stats_json TEXT,
    heuristic_features BLOB,
    PRIMARY KEY (game_id, move_number),
    FOREIGN KEY (game_id) REFERENCES games(game_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS idx_moves_game_turn ON game_moves(game_id, turn_number);

CREATE TABLE IF NOT EXISTS game_state_snapshots (
    game_id TEXT NOT NULL,
    move_number INTEGER NOT NULL,
    state_json TEXT NOT NULL,
    compressed INTEGER DEFAULT 0,
    state_hash TEXT,
    PRIMARY KEY (game_id, move_number),
    FOREIGN KEY (game_id) REFERENCES games(game_id) ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS game_choices (
    game_id TEXT NOT NULL,
    move_number INTEGER NOT NULL,
    choice_type TEXT NOT NULL,
    player INTEGER NOT NULL,
    options_json TEXT NOT NULL,
    selected_option_json TEXT NOT NULL,
    ai_reasoning TEXT,
    PRIMARY KEY (game_id, move_number, choice_type),
    FOREIGN KEY (game_id) REFERENCES games(game_id) ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS game_history_entries (
    game_id TEXT NOT NULL,
    move_number INTEGER NOT NULL,
    player INTEGER NOT NULL,
    phase_before TEXT NOT NULL,
    phase_after TEXT NOT NULL,
    status_before TEXT NOT NULL,
    status_after TEXT NOT NULL,
    progress_before_json TEXT NOT NULL,
    progress_after_json TEXT NOT NULL,
    state_hash_before TEXT,
    state_hash_after TEXT,
    board_summary_before_json TEXT,
    board_summary_after_json TEXT,
    state_before_json TEXT,
    state_after_json TEXT,
    compressed_states INTEGER DEFAULT 0,
    available_moves_json TEXT,
    available_moves_count INTEGER,
    engine_eval REAL,
    engine_depth INTEGER,
    fsm_valid INTEGER,
    fsm_error_code TEXT,
    PRIMARY KEY (game_id, move_number),
    FOREIGN KEY (game_id) REFERENCES games(game_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS idx_history_game ON game_history_entries(game_id);

CREATE TRIGGER IF NOT EXISTS enforce_moves_on_insert
AFTER INSERT ON games
WHEN NEW.game_status IN ('completed', 'finished')
BEGIN
    SELECT CASE
        WHEN (SELECT COUNT(*) FROM game_moves WHERE game_id = NEW.game_id) < 5
        THEN RAISE(ABORT, '{_INSERT_WITHOUT_MOVES}')
    END;
END;

CREATE TRIGGER IF NOT EXISTS enforce_moves_on_complete
BEFORE UPDATE ON games
WHEN NEW.game_status IN ('completed', 'finished') AND COALESCE(NEW.total_moves, 0) < 5
BEGIN
    SELECT RAISE(ABORT, 'Cannot complete game with total_moves < 5.');
END;
"""

#: Child tables of ``games`` and their primary keys, in the writer's insertion order.
CHILD_TABLES: dict[str, tuple[str, ...]] = {
    "game_players": ("game_id", "player_number"),
    "game_initial_state": ("game_id",),
    "game_moves": ("game_id", "move_number"),
    "game_state_snapshots": ("game_id", "move_number"),
    "game_choices": ("game_id", "move_number", "choice_type"),
    "game_history_entries": ("game_id", "move_number"),
}
