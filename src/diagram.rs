//! Diagrams of the transition table: Graphviz DOT ([`dot`]) and Mermaid ([`mermaid`]).
//!
//! Both writers draw the same picture of a [`TransitionTable`]:
//!
//! - One cluster per machine, in this order: the checkout session, the cart, the background
//!   operation. A node is labelled with [`Node`]'s `Display` (`Inventory (locked)`,
//!   `Checkout`, `Running`, ...); an edge with [`Event::label`].
//! - Every row of the table is one edge, with one exception. The table has a
//!   `cancelCartAsyncOperation` row into `Archived` from every active session node; drawn one
//!   by one they would bury the flow, so the drawing collapses them into a single edge from
//!   a small "any active state" node to `Archived` (a point in DOT, a small labelled state in
//!   Mermaid, which has no point shape). [`collapsed`] says which rows this covers; the
//!   table itself still holds each of them.
//! - Layout hints that change no edge: in DOT the phases of one step (`Inventory`,
//!   `Inventory (locked)`, `Inventory (running)`) share a row, and `fail` edges are red.
//! - The output is byte-stable: nodes in [`Node`] order, edges sorted by source, target and
//!   label, nothing taken from hash order, and a trailing newline. The committed
//!   `states.dot` is checked against it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use petgraph::visit::EdgeRef;

use crate::machine::{Action, Event, Machine, Node, SessionNode, Transition, TransitionTable};
use crate::model::SessionState;

/// The event whose rows into `Archived` are collapsed.
const CANCEL: Event = Event::Action(Action::CancelCartAsyncOperation);

/// The node ID of the "any active state" point.
const ANY_ACTIVE_ID: &str = "session_any_active";

/// The label of the "any active state" point.
const ANY_ACTIVE_LABEL: &str = "any active state";

/// Whether the drawing folds `row` into the single "any active state" edge: a
/// `cancelCartAsyncOperation` row from an active session node into `Archived`.
pub fn collapsed(row: &Transition) -> bool {
    is_collapsed(row.event, row.from, row.to)
}

fn is_collapsed(event: Event, from: Node, to: Node) -> bool {
    event == CANCEL
        && matches!(from, Node::Session(SessionNode::At(..)))
        && to == Node::Session(SessionNode::Archived)
}

/// The Graphviz DOT drawing of `table`.
pub fn dot(table: &TransitionTable) -> String {
    let drawing = Drawing::of(table);
    let mut out = String::new();
    let _ = writeln!(out, "digraph cartflow {{");
    let _ = writeln!(
        out,
        "  // The transition table of the {:?} template, drawn by `cartflow diagram --format dot`.",
        table.template().name
    );
    let _ = writeln!(
        out,
        "  graph [fontname=\"Helvetica\", fontsize=12, label={}, labelloc=t, newrank=true, nodesep=0.3, ranksep=0.45];",
        dot_quote(&format!(
            "cartflow: the {} checkout template",
            table.template().name
        ))
    );
    let _ = writeln!(
        out,
        "  node [fontname=\"Helvetica\", fontsize=10, shape=box, style=\"rounded\"];"
    );
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=9];");
    for cluster in &drawing.clusters {
        let _ = writeln!(out);
        let _ = writeln!(out, "  subgraph cluster_{} {{", cluster.key);
        let _ = writeln!(out, "    label={};", dot_quote(cluster.title));
        let _ = writeln!(out, "    style=\"rounded\";");
        let _ = writeln!(out, "    color=\"gray60\";");
        for node in &cluster.nodes {
            let _ = match node.kind {
                Kind::State => writeln!(out, "    {} [label={}];", node.id, dot_quote(&node.label)),
                Kind::AnyActive => writeln!(
                    out,
                    "    {} [shape=point, width=0.12, xlabel={}];",
                    node.id,
                    dot_quote(&node.label)
                ),
            };
        }
        for row in &cluster.rows {
            let _ = writeln!(out, "    {{ rank=same; {}; }}", row.join("; "));
        }
        for edge in &cluster.edges {
            // Failures in red and the collapsed cancel dashed, so the happy path stands out.
            let style = if edge.collapsed {
                ", style=dashed"
            } else if edge.label == Event::Fail.label() {
                ", color=\"firebrick\", fontcolor=\"firebrick\""
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {} -> {} [label={}{style}];",
                edge.from,
                edge.to,
                dot_quote(&edge.label),
            );
        }
        let _ = writeln!(out, "  }}");
    }
    let _ = writeln!(out, "}}");
    out
}

/// The Mermaid (`stateDiagram-v2`) drawing of `table`.
pub fn mermaid(table: &TransitionTable) -> String {
    let drawing = Drawing::of(table);
    let mut out = String::new();
    let _ = writeln!(out, "stateDiagram-v2");
    let _ = writeln!(
        out,
        "    %% The transition table of the {:?} template, drawn by `cartflow diagram --format mermaid`.",
        table.template().name
    );
    for cluster in &drawing.clusters {
        let _ = writeln!(
            out,
            "    state {} as {} {{",
            mermaid_quote(cluster.title),
            cluster.key
        );
        for node in &cluster.nodes {
            let _ = writeln!(
                out,
                "        state {} as {}",
                mermaid_quote(&node.label),
                node.id
            );
        }
        for edge in &cluster.edges {
            let _ = writeln!(
                out,
                "        {} --> {} : {}",
                edge.from,
                edge.to,
                mermaid_label(&edge.label)
            );
        }
        let _ = writeln!(out, "    }}");
    }
    if drawing
        .clusters
        .iter()
        .any(|c| c.nodes.iter().any(|n| n.kind == Kind::AnyActive))
    {
        let _ = writeln!(
            out,
            "    classDef anyActive font-size:10px,stroke-dasharray:4 3"
        );
        let _ = writeln!(out, "    class {ANY_ACTIVE_ID} anyActive");
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    State,
    AnyActive,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DrawnNode {
    id: String,
    label: String,
    kind: Kind,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DrawnEdge {
    from: String,
    to: String,
    label: String,
    collapsed: bool,
}

struct Cluster {
    key: &'static str,
    title: &'static str,
    nodes: Vec<DrawnNode>,
    edges: Vec<DrawnEdge>,
    /// Nodes DOT keeps on one row: the phases of one step (open, locked, running).
    rows: Vec<Vec<String>>,
}

/// The picture both writers print: clusters of sorted nodes and sorted edges.
struct Drawing {
    clusters: Vec<Cluster>,
}

impl Drawing {
    fn of(table: &TransitionTable) -> Drawing {
        let (graph, _) = table.graph();
        let nodes: BTreeSet<Node> = graph.node_weights().copied().collect();
        // Sorted by (from, to, label) in Node order, so edges follow the flow.
        let mut edges: BTreeMap<Machine, BTreeSet<(Node, Node, &'static str)>> = BTreeMap::new();
        let mut any_active = false;
        for edge in graph.edge_references() {
            let (from, to, event) = (graph[edge.source()], graph[edge.target()], *edge.weight());
            if is_collapsed(event, from, to) {
                any_active = true;
                continue;
            }
            edges
                .entry(from.machine())
                .or_default()
                .insert((from, to, event.label()));
        }
        let clusters = [
            (Machine::Session, "session", "CartCheckoutSession"),
            (Machine::Cart, "cart", "WebCart.Status"),
            (
                Machine::Operation,
                "operation",
                "BackgroundOperation.Status",
            ),
        ]
        .into_iter()
        .map(|(machine, key, title)| {
            let mut drawn_nodes: Vec<DrawnNode> = nodes
                .iter()
                .filter(|n| n.machine() == machine)
                .map(|&n| DrawnNode {
                    id: node_id(n),
                    label: n.to_string(),
                    kind: Kind::State,
                })
                .collect();
            let mut drawn_edges: Vec<DrawnEdge> = edges
                .get(&machine)
                .into_iter()
                .flatten()
                .map(|&(from, to, label)| DrawnEdge {
                    from: node_id(from),
                    to: node_id(to),
                    label: label.to_owned(),
                    collapsed: false,
                })
                .collect();
            if machine == Machine::Session && any_active {
                drawn_nodes.push(DrawnNode {
                    id: ANY_ACTIVE_ID.to_owned(),
                    label: ANY_ACTIVE_LABEL.to_owned(),
                    kind: Kind::AnyActive,
                });
                drawn_edges.push(DrawnEdge {
                    from: ANY_ACTIVE_ID.to_owned(),
                    to: node_id(Node::Session(SessionNode::Archived)),
                    label: CANCEL.label().to_owned(),
                    collapsed: true,
                });
            }
            let mut by_state: BTreeMap<SessionState, Vec<String>> = BTreeMap::new();
            for &node in nodes.iter().filter(|n| n.machine() == machine) {
                if let Node::Session(SessionNode::At(Some(state), _)) = node {
                    by_state.entry(state).or_default().push(node_id(node));
                }
            }
            Cluster {
                key,
                title,
                nodes: drawn_nodes,
                edges: drawn_edges,
                rows: by_state.into_values().filter(|ids| ids.len() > 1).collect(),
            }
        })
        .collect();
        Drawing { clusters }
    }
}

/// A stable identifier for a node: its machine and its label, lower-cased, with every run
/// of other characters turned into one underscore (`Inventory (locked)` ->
/// `session_inventory_locked`).
fn node_id(node: Node) -> String {
    let machine = match node.machine() {
        Machine::Session => "session",
        Machine::Cart => "cart",
        Machine::Operation => "operation",
    };
    let mut id = String::from(machine);
    let mut gap = true;
    for c in node.to_string().chars() {
        if c.is_ascii_alphanumeric() {
            if gap {
                id.push('_');
            }
            id.push(c.to_ascii_lowercase());
            gap = false;
        } else {
            gap = true;
        }
    }
    id
}

fn dot_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn mermaid_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "#quot;"))
}

/// Mermaid ends a transition label at the line end and reads `:` specially.
fn mermaid_label(text: &str) -> String {
    text.replace(':', "#58;").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Template;
    use crate::model::{CartStatus, OperationStatus};

    fn edge_lines<'a>(text: &'a str, arrow: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.contains(arrow)).collect()
    }

    #[test]
    fn output_is_identical_on_two_calls_and_ends_with_a_newline() {
        let table = TransitionTable::standard();
        assert_eq!(dot(&table), dot(&table));
        assert_eq!(mermaid(&table), mermaid(&table));
        // A table rebuilt from scratch draws the same bytes.
        assert_eq!(dot(&table), dot(&TransitionTable::standard()));
        assert!(dot(&table).ends_with("}\n"));
        assert!(mermaid(&table).ends_with('\n'));
    }

    #[test]
    fn every_state_string_and_action_name_is_drawn() {
        let table = TransitionTable::standard();
        for text in [dot(&table), mermaid(&table)] {
            for &state in SessionState::ALL {
                assert!(
                    text.contains(&format!("\"{}\"", state.as_str())),
                    "{state} missing"
                );
            }
            for action in Action::ALL {
                assert!(text.contains(action.api_name()), "{action} missing");
            }
            for status in CartStatus::ALL {
                // Only the statuses the table moves between are nodes.
                if table.nodes().contains(&Node::Cart(status)) {
                    assert!(text.contains(&format!("\"{}\"", status.as_str())));
                }
            }
            for status in OperationStatus::ALL {
                assert!(text.contains(&format!("\"{}\"", status.as_str())));
            }
        }
    }

    #[test]
    fn one_edge_per_row_except_the_collapsed_cancels() {
        for template in [Template::standard(), Template::without_promotions()] {
            let table = TransitionTable::build(template).unwrap();
            let collapsed_rows = table.rows().iter().filter(|r| collapsed(r)).count();
            let active_nodes = table
                .nodes()
                .into_iter()
                .filter(|n| matches!(n, Node::Session(SessionNode::At(..))))
                .count();
            assert_eq!(collapsed_rows, active_nodes);
            let drawn = table.rows().len() - collapsed_rows + 1;
            assert_eq!(edge_lines(&dot(&table), " -> ").len(), drawn);
            assert_eq!(edge_lines(&mermaid(&table), " --> ").len(), drawn);
            // Exactly one cancel edge reaches Archived from an active node: the collapsed one.
            let dot = dot(&table);
            let into_archived: Vec<_> = edge_lines(&dot, "-> session_archived")
                .into_iter()
                .filter(|l| l.contains("cancelCartAsyncOperation"))
                .collect();
            assert_eq!(into_archived.len(), 1);
            assert!(into_archived[0].trim_start().starts_with(ANY_ACTIVE_ID));
        }
    }

    #[test]
    fn each_non_collapsed_row_has_its_own_edge_line() {
        let table = TransitionTable::standard();
        let dot = dot(&table);
        for row in table.rows().iter().filter(|r| !collapsed(r)) {
            let line = format!(
                "    {} -> {} [label={}",
                node_id(row.from),
                node_id(row.to),
                dot_quote(row.event.label())
            );
            assert_eq!(dot.matches(&line).count(), 1, "{line}");
        }
    }

    #[test]
    fn node_ids_are_unique_and_plain() {
        let table = TransitionTable::standard();
        let ids: BTreeSet<String> = table.nodes().into_iter().map(node_id).collect();
        assert_eq!(ids.len(), table.nodes().len());
        assert!(!ids.contains(ANY_ACTIVE_ID));
        assert!(
            ids.iter()
                .all(|id| id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        );
        assert_eq!(
            node_id(Node::Session(SessionNode::At(
                Some(SessionState::Inventory),
                crate::machine::Phase::Locked
            ))),
            "session_inventory_locked"
        );
    }
}
