//! What is copied from each Buildbot 4 table, and into which of Cascade's:
//! one [`Table`] per table whose ids are kept, read in batches by its key,
//! each batch with its children (the rows that belong to it, such as a
//! build's properties) written in the same transaction.

/// How one column read from Buildbot becomes the value written to Cascade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conv {
    /// An integer that cannot be NULL.
    Int,
    /// An integer or NULL.
    OptInt,
    /// An integer, 0 when NULL.
    IntOr0,
    /// An integer, -1 when NULL (a request's results before it ends).
    IntOrNeg1,
    /// Text that cannot be NULL.
    Text,
    /// Text or NULL.
    OptText,
    /// Text, empty when NULL.
    TextOrEmpty,
    /// Bytes (a log chunk's content).
    Bytes,
    /// The id of a row of this Cascade table: moved by the table's offset.
    Id(&'static str),
    /// Such an id, or NULL.
    OptId(&'static str),
    /// A Buildbot builder id, as the Cascade builder it became.
    Builder,
    /// A Buildbot worker id or NULL, as the Cascade worker it became.
    OptWorker,
    /// The master Cascade records imported builds under (NULL stays NULL).
    OptMaster,
    /// A change property's `[value, source]`: Cascade keeps the value.
    PropValue,
    /// Read for a [`Fix`], not written.
    Skip,
}

/// A column: its expression in Buildbot's database, and how it converts.
pub(crate) struct Col(pub &'static str, pub Conv);

/// What is done to a converted row before it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fix {
    None,
    /// Something Buildbot never finished (columns: `complete` if any,
    /// `complete_at`, `results`, and the time it began) ends, cancelled,
    /// when it began: the history is closed, and nothing is run again.
    Unfinished {
        complete: Option<usize>,
        complete_at: usize,
        results: usize,
        since: usize,
    },
    /// A source stamp's key, from Buildbot's hash.
    SourceStamp,
    /// A log chunk: uncompressed (columns 3 = code, 4 = bytes) and stored
    /// the way Cascade stores its own.
    LogChunk,
}

/// Rows of one Buildbot table (or join) written to one Cascade table.
pub(crate) struct Part {
    /// Cascade's table.
    pub target: &'static str,
    /// Its columns, in the order of `cols` (less the `Skip`ped ones).
    pub columns: &'static str,
    /// Buildbot's FROM clause.
    pub from: &'static str,
    /// The column the batch is cut by: the key for the main part, the
    /// parent's id for a child.
    pub key: &'static str,
    /// Cascade's column holding the (moved) key, for the final count.
    pub target_key: &'static str,
    /// The table whose offset moved that key.
    pub key_table: &'static str,
    pub cols: &'static [Col],
    pub conflict: &'static str,
    pub fix: Fix,
}

/// One table whose rows keep their ids (moved by an offset), with its children.
pub(crate) struct Table {
    /// Cascade's table, also the name progress is kept under.
    pub name: &'static str,
    pub main: Part,
    pub children: &'static [Part],
    /// Main rows per batch.
    pub batch: i64,
    /// Keyed by (log id, first line) rather than by one id.
    pub by_line: bool,
}

use Conv::*;

const UNFINISHED_BUILDSET: Fix = Fix::Unfinished { complete: Some(5), complete_at: 6, results: 7, since: 4 };
const UNFINISHED_REQUEST: Fix = Fix::Unfinished { complete: Some(7), complete_at: 8, results: 9, since: 6 };
const UNFINISHED_BUILD: Fix = Fix::Unfinished { complete: None, complete_at: 7, results: 9, since: 6 };
const UNFINISHED_STEP: Fix = Fix::Unfinished { complete: None, complete_at: 5, results: 7, since: 4 };

const fn part(
    target: &'static str,
    columns: &'static str,
    from: &'static str,
    key: &'static str,
    target_key: &'static str,
    key_table: &'static str,
    cols: &'static [Col],
) -> Part {
    Part { target, columns, from, key, target_key, key_table, cols, conflict: "ON CONFLICT DO NOTHING", fix: Fix::None }
}

const fn main(
    target: &'static str,
    columns: &'static str,
    from: &'static str,
    key: &'static str,
    cols: &'static [Col],
) -> Part {
    Part {
        target,
        columns,
        from,
        key,
        target_key: "id",
        key_table: target,
        cols,
        conflict: "ON CONFLICT (id) DO NOTHING",
        fix: Fix::None,
    }
}

/// The tables in the order they are copied (each refers only to earlier ones).
pub(crate) const TABLES: &[Table] = &[
    Table {
        name: "sourcestamps",
        main: Part {
            fix: Fix::SourceStamp,
            ..main(
                "sourcestamps",
                "id, ss_key, branch, revision, repository, project, codebase, created_at",
                "sourcestamps",
                "id",
                &[
                    Col("id", Id("sourcestamps")),
                    Col("ss_hash", Text),
                    Col("branch", OptText),
                    Col("revision", OptText),
                    Col("repository", TextOrEmpty),
                    Col("project", TextOrEmpty),
                    Col("codebase", TextOrEmpty),
                    Col("created_at", Int),
                ],
            )
        },
        children: &[],
        batch: 2000,
        by_line: false,
    },
    Table {
        name: "changes",
        main: main(
            "changes",
            "id, author, committer, comments, branch, revision, revlink, when_timestamp, category, repository, \
             codebase, project, sourcestamp_id, parent_change_id, received_at",
            "changes",
            "changeid",
            &[
                Col("changeid", Id("changes")),
                Col("author", Text),
                Col("committer", OptText),
                Col("comments", TextOrEmpty),
                Col("branch", OptText),
                Col("revision", OptText),
                Col("revlink", OptText),
                Col("when_timestamp", Int),
                Col("category", OptText),
                Col("repository", TextOrEmpty),
                Col("codebase", TextOrEmpty),
                Col("project", TextOrEmpty),
                Col("sourcestampid", Id("sourcestamps")),
                Col("parent_changeids", OptId("changes")),
                Col("when_timestamp", Int),
            ],
        ),
        children: &[
            Part {
                conflict: "",
                ..part(
                    "change_files",
                    "change_id, filename",
                    "change_files",
                    "changeid",
                    "change_id",
                    "changes",
                    &[Col("changeid", Id("changes")), Col("filename", Text)],
                )
            },
            part(
                "change_properties",
                "change_id, name, value",
                "change_properties",
                "changeid",
                "change_id",
                "changes",
                &[Col("changeid", Id("changes")), Col("property_name", Text), Col("property_value", PropValue)],
            ),
        ],
        batch: 1000,
        by_line: false,
    },
    Table {
        name: "buildsets",
        main: Part {
            fix: UNFINISHED_BUILDSET,
            ..main(
                "buildsets",
                "id, external_idstring, reason, scheduler_id, submitted_at, complete, complete_at, results, \
                 parent_build_id, parent_relationship, rebuilt_build_id",
                "buildsets",
                "id",
                &[
                    Col("id", Id("buildsets")),
                    Col("external_idstring", OptText),
                    Col("reason", TextOrEmpty),
                    Col("NULL", OptInt),
                    Col("submitted_at", Int),
                    Col("complete", IntOr0),
                    Col("complete_at", OptInt),
                    Col("results", OptInt),
                    Col("parent_buildid", OptId("builds")),
                    Col("parent_relationship", OptText),
                    Col("rebuilt_buildid", OptId("builds")),
                ],
            )
        },
        children: &[
            part(
                "buildset_properties",
                "buildset_id, name, value",
                "buildset_properties",
                "buildsetid",
                "buildset_id",
                "buildsets",
                &[Col("buildsetid", Id("buildsets")), Col("property_name", Text), Col("property_value", Text)],
            ),
            part(
                "buildset_sourcestamps",
                "buildset_id, sourcestamp_id",
                "buildset_sourcestamps",
                "buildsetid",
                "buildset_id",
                "buildsets",
                &[Col("buildsetid", Id("buildsets")), Col("sourcestampid", Id("sourcestamps"))],
            ),
            // Buildbot finds a buildset's changes through its source stamps.
            part(
                "buildset_changes",
                "buildset_id, change_id",
                "buildset_sourcestamps bss JOIN changes c ON c.sourcestampid = bss.sourcestampid",
                "bss.buildsetid",
                "buildset_id",
                "buildsets",
                &[Col("bss.buildsetid", Id("buildsets")), Col("c.changeid", Id("changes"))],
            ),
        ],
        batch: 1000,
        by_line: false,
    },
    Table {
        name: "builds",
        main: Part {
            fix: UNFINISHED_BUILD,
            ..main(
                "builds",
                "id, number, builder_id, build_request_id, worker_id, master_id, started_at, complete_at, \
                 state_string, results",
                "builds",
                "id",
                &[
                    Col("id", Id("builds")),
                    Col("number", Int),
                    Col("builderid", Builder),
                    Col("buildrequestid", Id("buildrequests")),
                    Col("workerid", OptWorker),
                    Col("masterid", OptMaster),
                    Col("started_at", Int),
                    Col("complete_at", OptInt),
                    Col("state_string", TextOrEmpty),
                    Col("results", OptInt),
                ],
            )
        },
        children: &[part(
            "build_properties",
            "build_id, name, value, source",
            "build_properties",
            "buildid",
            "build_id",
            "builds",
            &[Col("buildid", Id("builds")), Col("name", Text), Col("value", Text), Col("source", TextOrEmpty)],
        )],
        batch: 1000,
        by_line: false,
    },
    Table {
        // `+ 0` keeps the planner on the subqueries' foreign-key indexes: on
        // a freshly loaded PostgreSQL (no statistics yet) it otherwise walks
        // a primary key backwards per request, filtering.
        name: "buildrequests",
        main: Part {
            fix: UNFINISHED_REQUEST,
            ..main(
                "buildrequests",
                "id, buildset_id, builder_id, priority, repository, branch, submitted_at, complete, complete_at, \
                 results, waited_for, claimed_by_master_id, claimed_at, build_id",
                "buildrequests br LEFT JOIN buildrequest_claims cl ON cl.brid = br.id",
                "br.id",
                &[
                    Col("br.id", Id("buildrequests")),
                    Col("br.buildsetid", Id("buildsets")),
                    Col("br.builderid", Builder),
                    Col("br.priority", IntOr0),
                    Col(
                        "(SELECT ss.repository FROM buildset_sourcestamps bss JOIN sourcestamps ss \
                         ON ss.id = bss.sourcestampid WHERE bss.buildsetid = br.buildsetid ORDER BY bss.id + 0 LIMIT 1)",
                        TextOrEmpty,
                    ),
                    Col(
                        "(SELECT ss.branch FROM buildset_sourcestamps bss JOIN sourcestamps ss \
                         ON ss.id = bss.sourcestampid WHERE bss.buildsetid = br.buildsetid ORDER BY bss.id + 0 LIMIT 1)",
                        OptText,
                    ),
                    Col("br.submitted_at", Int),
                    Col("br.complete", IntOr0),
                    Col("br.complete_at", OptInt),
                    Col("br.results", IntOrNeg1),
                    Col("br.waited_for", IntOr0),
                    Col("cl.masterid", OptMaster),
                    Col("cl.claimed_at", OptInt),
                    Col("(SELECT MAX(b.id + 0) FROM builds b WHERE b.buildrequestid = br.id)", OptId("builds")),
                ],
            )
        },
        children: &[],
        batch: 2000,
        by_line: false,
    },
    Table {
        name: "steps",
        main: Part {
            fix: UNFINISHED_STEP,
            ..main(
                "steps",
                "id, build_id, number, name, started_at, complete_at, state_string, results, hidden",
                "steps",
                "id",
                &[
                    Col("id", Id("steps")),
                    Col("buildid", Id("builds")),
                    Col("number", Int),
                    Col("name", Text),
                    Col("started_at", OptInt),
                    Col("complete_at", OptInt),
                    Col("state_string", TextOrEmpty),
                    Col("results", OptInt),
                    Col("hidden", IntOr0),
                ],
            )
        },
        children: &[],
        batch: 4000,
        by_line: false,
    },
    Table {
        name: "logs",
        main: main(
            "logs",
            "id, step_id, name, slug, type, num_lines, complete",
            "logs",
            "id",
            &[
                Col("id", Id("logs")),
                Col("stepid", Id("steps")),
                Col("name", Text),
                Col("slug", Text),
                Col("type", Text),
                Col("num_lines", Int),
                Col("complete", IntOr0),
            ],
        ),
        children: &[],
        batch: 4000,
        by_line: false,
    },
    Table {
        name: "log_chunks",
        main: Part {
            target_key: "log_id",
            key_table: "logs",
            conflict: "ON CONFLICT (log_id, first_line) DO NOTHING",
            fix: Fix::LogChunk,
            ..main(
                "log_chunks",
                "log_id, first_line, last_line, compressed, content",
                "logchunks",
                "logid",
                &[
                    Col("logid", Id("logs")),
                    Col("first_line", Int),
                    Col("last_line", Int),
                    Col("compressed", Int),
                    Col("content", Bytes),
                ],
            )
        },
        children: &[],
        batch: 500,
        by_line: true,
    },
    Table {
        name: "test_names",
        main: main(
            "test_names",
            "id, builderid, name",
            "test_names",
            "id",
            &[Col("id", Id("test_names")), Col("builderid", Builder), Col("name", Text)],
        ),
        children: &[],
        batch: 4000,
        by_line: false,
    },
    Table {
        name: "test_code_paths",
        main: main(
            "test_code_paths",
            "id, builderid, path",
            "test_code_paths",
            "id",
            &[Col("id", Id("test_code_paths")), Col("builderid", Builder), Col("path", Text)],
        ),
        children: &[],
        batch: 4000,
        by_line: false,
    },
    Table {
        name: "test_result_sets",
        main: main(
            "test_result_sets",
            "id, builderid, buildid, stepid, description, category, value_unit, tests_passed, tests_failed, complete",
            "test_result_sets",
            "id",
            &[
                Col("id", Id("test_result_sets")),
                Col("builderid", Builder),
                Col("buildid", Id("builds")),
                Col("stepid", Id("steps")),
                Col("description", OptText),
                Col("category", Text),
                Col("value_unit", Text),
                Col("tests_passed", OptInt),
                Col("tests_failed", OptInt),
                Col("complete", IntOr0),
            ],
        ),
        children: &[],
        batch: 4000,
        by_line: false,
    },
    Table {
        name: "test_results",
        main: main(
            "test_results",
            "id, builderid, test_result_setid, test_nameid, test_code_pathid, line, duration_ns, value",
            "test_results",
            "id",
            &[
                Col("id", Id("test_results")),
                Col("builderid", Builder),
                Col("test_result_setid", Id("test_result_sets")),
                Col("test_nameid", OptId("test_names")),
                Col("test_code_pathid", OptId("test_code_paths")),
                Col("line", OptInt),
                Col("duration_ns", OptInt),
                Col("value", Text),
            ],
        ),
        children: &[],
        batch: 4000,
        by_line: false,
    },
];

/// The Cascade tables whose ids follow Buildbot's (moved by an offset).
pub(crate) fn id_tables() -> impl Iterator<Item = &'static str> {
    TABLES.iter().filter(|t| !t.by_line).map(|t| t.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part writes as many columns as it names, and ids only move
    /// by the offsets of tables that are copied.
    #[test]
    fn parts_are_consistent() {
        let known: Vec<&str> = id_tables().collect();
        for t in TABLES {
            for p in std::iter::once(&t.main).chain(t.children) {
                let written = p.cols.iter().filter(|c| c.1 != Skip).count();
                assert_eq!(written, p.columns.split(',').count(), "{}", p.target);
                for c in p.cols {
                    if let Id(table) | OptId(table) = c.1 {
                        assert!(known.contains(&table), "{}: {table}", p.target);
                    }
                }
                assert!(known.contains(&p.key_table), "{}", p.target);
            }
        }
        let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        assert!(names.iter().position(|n| *n == "builds") < names.iter().position(|n| *n == "buildrequests"));
    }
}
