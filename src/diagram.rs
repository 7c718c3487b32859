//! Diagrams of the transition table: Graphviz DOT ([`dot`]) and Mermaid ([`mermaid`]).
//!
//! Both writers draw the same picture of a [`TransitionTable`]:
//!
//! - One cluster per machine, in this order: the checkout session, the cart, the background
//!   operation. A node is labelled with [`Node`]'s `Display` (`Inventory (locked)`,
//!   `Checkout`, `Running`, ...); an edge with [`Transition::label`]: the event's label, after
//!   the name the template gives the transition (`CheckInventory (checkCartInventoryAction)`).
//! - Every row of the table is one edge, with two exceptions. The table has a
//!   `cancelCartAsyncOperation` row into `Archived` from every active session node, and a
//!   `checkoutSessionAction` row into `Archived` from every open one (a restart archives a
//!   failed or expired session); drawn one by one they would bury the flow, so the drawing
//!   collapses each family into a single edge from a small "any active state" / "any open
//!   state" node to `Archived` (a point in DOT, a small labelled state in Mermaid, which has
//!   no point shape). [`collapsed`] says which rows this covers; the table itself still
//!   holds each of them.
//! - Layout hints that change no edge: in DOT the phases of one step (`Inventory`,
//!   `Inventory (locked)`, `Inventory (running)`) share a row, and `fail` edges are red.
//! - The output is byte-stable: nodes in [`Node`] order, edges sorted by source, target and
//!   label, nothing taken from hash order, and a trailing newline. The committed
//!   `states.dot` is checked against it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::json;

use crate::machine::{
    Action, Event, Machine, Node, Phase, SessionNode, Transition, TransitionTable,
};
use crate::model::SessionState;

/// A family of rows into `Archived` that the drawing folds into one edge from a point.
struct Collapse {
    event: Event,
    point_id: &'static str,
    point_label: &'static str,
    /// Which source nodes the family covers.
    covers: fn(Node) -> bool,
}

const COLLAPSES: [Collapse; 3] = [
    Collapse {
        event: Event::Action(Action::CancelCartAsyncOperation),
        point_id: "session_any_active",
        point_label: "any active state",
        covers: |n| matches!(n, Node::Session(SessionNode::At(..))),
    },
    Collapse {
        event: Event::Edit,
        point_id: "session_any_active",
        point_label: "any active state",
        covers: |n| matches!(n, Node::Session(SessionNode::At(..))),
    },
    Collapse {
        event: Event::Action(Action::CheckoutSession),
        point_id: "session_any_open",
        point_label: "any open state",
        covers: |n| matches!(n, Node::Session(SessionNode::At(_, Phase::Open))),
    },
];

/// Whether the drawing folds `row` into one of the collapsed edges into `Archived`.
pub fn collapsed(row: &Transition) -> bool {
    collapse_of(row.event, row.from, row.to).is_some()
}

fn collapse_of(event: Event, from: Node, to: Node) -> Option<&'static Collapse> {
    if to != Node::Session(SessionNode::Archived) {
        return None;
    }
    COLLAPSES
        .iter()
        .find(|c| c.event == event && (c.covers)(from))
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
                Kind::Point => writeln!(
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
        .any(|c| c.nodes.iter().any(|n| n.kind == Kind::Point))
    {
        let _ = writeln!(
            out,
            "    classDef anyActive font-size:10px,stroke-dasharray:4 3"
        );
        for cluster in &drawing.clusters {
            for node in cluster.nodes.iter().filter(|n| n.kind == Kind::Point) {
                let _ = writeln!(out, "    class {} anyActive", node.id);
            }
        }
    }
    out
}

/// The drawing as data, for a page that lays it out itself (the inspector): the same
/// clusters, nodes, edges and rows as [`dot`], and each table node's drawn identifier, so that
/// live counts can be put on the nodes.
#[derive(Debug)]
pub struct Layout {
    drawing: Drawing,
    template: String,
}

impl Layout {
    /// The layout of `table`.
    pub fn of(table: &TransitionTable) -> Layout {
        Layout {
            drawing: Drawing::of(table),
            template: table.template().name.clone(),
        }
    }

    /// The identifier `node` is drawn under (the one [`dot`] prints).
    pub fn id_of(&self, node: Node) -> String {
        self.drawing.ids.get(node)
    }

    /// The layout as JSON: `template`, and `clusters`, each with `key`, `title`, `nodes`
    /// (`id`, `label`, `point` for the collapsed families' sources), `edges` (`from`, `to`,
    /// `label`, `collapsed`, `fail`) and `rows` (node identifiers drawn side by side: the
    /// phases of one step).
    pub fn to_json(&self) -> serde_json::Value {
        let fail = Event::Fail.label();
        let clusters: Vec<serde_json::Value> = self
            .drawing
            .clusters
            .iter()
            .map(|c| {
                let nodes: Vec<serde_json::Value> = c
                    .nodes
                    .iter()
                    .map(|n| json!({"id": n.id, "label": n.label, "point": n.kind == Kind::Point}))
                    .collect();
                let edges: Vec<serde_json::Value> = c
                    .edges
                    .iter()
                    .map(|e| {
                        json!({"from": e.from, "to": e.to, "label": e.label,
                               "collapsed": e.collapsed, "fail": e.label == fail})
                    })
                    .collect();
                json!({"key": c.key, "title": c.title, "nodes": nodes, "edges": edges, "rows": c.rows})
            })
            .collect();
        json!({"template": self.template, "clusters": clusters})
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    State,
    Point,
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

#[derive(Debug)]
struct Cluster {
    key: &'static str,
    title: &'static str,
    nodes: Vec<DrawnNode>,
    edges: Vec<DrawnEdge>,
    /// Nodes DOT keeps on one row: the phases of one step (open, locked, running).
    rows: Vec<Vec<String>>,
}

/// The picture both writers print: clusters of sorted nodes and sorted edges.
#[derive(Debug)]
struct Drawing {
    clusters: Vec<Cluster>,
    ids: NodeIds,
}

impl Drawing {
    fn of(table: &TransitionTable) -> Drawing {
        let rank = |node: Node| flow_rank(table, node);
        let mut nodes: Vec<Node> = table.nodes().into_iter().collect();
        nodes.sort_by_key(|&n| rank(n));
        let ids = NodeIds::of(&nodes);
        let node_id = |node: Node| ids.get(node);
        // Sorted by (from, to, label) in flow order, so edges follow the flow.
        let mut edges: BTreeMap<Machine, BTreeSet<(FlowRank, FlowRank, String)>> = BTreeMap::new();
        let mut points: BTreeSet<usize> = BTreeSet::new();
        for row in table.rows() {
            if let Some(c) = collapse_of(row.event, row.from, row.to) {
                points.extend(COLLAPSES.iter().position(|x| std::ptr::eq(x, c)));
                continue;
            }
            edges.entry(row.from.machine()).or_default().insert((
                rank(row.from),
                rank(row.to),
                row.label(),
            ));
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
                .map(|(from, to, label)| DrawnEdge {
                    from: node_id(from.1),
                    to: node_id(to.1),
                    label: label.clone(),
                    collapsed: false,
                })
                .collect();
            for c in points
                .iter()
                .map(|&i| &COLLAPSES[i])
                .filter(|_| machine == Machine::Session)
            {
                // Families may share a point (cancel and edit both leave from any active state).
                if !drawn_nodes.iter().any(|n| n.id == c.point_id) {
                    drawn_nodes.push(DrawnNode {
                        id: c.point_id.to_owned(),
                        label: c.point_label.to_owned(),
                        kind: Kind::Point,
                    });
                }
                drawn_edges.push(DrawnEdge {
                    from: c.point_id.to_owned(),
                    to: node_id(Node::Session(SessionNode::Archived)),
                    label: c.event.label().to_owned(),
                    collapsed: true,
                });
            }
            // The phases of one step, steps in flow order.
            let mut by_state: Vec<(SessionState, Vec<String>)> = Vec::new();
            for &node in nodes.iter().filter(|n| n.machine() == machine) {
                if let Node::Session(SessionNode::At(Some(state), _)) = node {
                    match by_state.iter_mut().find(|(s, _)| *s == state) {
                        Some((_, ids)) => ids.push(node_id(node)),
                        None => by_state.push((state, vec![node_id(node)])),
                    }
                }
            }
            Cluster {
                key,
                title,
                nodes: drawn_nodes,
                edges: drawn_edges,
                rows: by_state
                    .into_iter()
                    .map(|(_, ids)| ids)
                    .filter(|ids| ids.len() > 1)
                    .collect(),
            }
        })
        .collect();
        Drawing { clusters, ids }
    }
}

/// Where a node is drawn: session States in the order of the template's steps (`Error`, a
/// State of no step, after them; no session first, Archived last), then in [`Node`] order.
type FlowRank = (usize, Node);

fn flow_rank(table: &TransitionTable, node: Node) -> FlowRank {
    let steps = &table.template().steps;
    let position = match node {
        Node::Session(SessionNode::At(Some(state), _)) => {
            1 + steps
                .iter()
                .position(|s| s.state == state)
                .unwrap_or(steps.len())
        }
        Node::Session(SessionNode::Archived) => usize::MAX,
        _ => 0,
    };
    (position, node)
}

/// Each drawn node's identifier: [`node_id`], made unique by a numeric suffix where two
/// labels read alike once plain (`Credit Check` and `Credit-Check`). Nodes are numbered in
/// drawing order, so the identifiers are stable.
#[derive(Debug)]
struct NodeIds(BTreeMap<Node, String>);

impl NodeIds {
    fn of(nodes: &[Node]) -> NodeIds {
        let mut taken = BTreeSet::new();
        let mut ids = BTreeMap::new();
        for &node in nodes {
            let base = node_id(node);
            let id = (1..)
                .map(|n| match n {
                    1 => base.clone(),
                    n => format!("{base}_{n}"),
                })
                .find(|id| !taken.contains(id) && !COLLAPSES.iter().any(|c| c.point_id == id))
                .unwrap_or_default();
            taken.insert(id.clone());
            ids.insert(node, id);
        }
        NodeIds(ids)
    }

    fn get(&self, node: Node) -> String {
        self.0.get(&node).cloned().unwrap_or_else(|| node_id(node))
    }
}

/// A plain identifier for a node: its machine and its label, lower-cased, with every run
/// of other characters turned into one underscore (`Inventory (locked)` ->
/// `session_inventory_locked`) and a letter beyond ASCII written as `u` and its code point
/// in hex (`Prüfung` -> `session_pru00fcfung`).
fn node_id(node: Node) -> String {
    let machine = match node.machine() {
        Machine::Session => "session",
        Machine::Cart => "cart",
        Machine::Operation => "operation",
    };
    let mut id = String::from(machine);
    let mut gap = true;
    for c in node.to_string().chars() {
        if c.is_alphanumeric() {
            if gap {
                id.push('_');
            }
            if c.is_ascii() {
                id.push(c.to_ascii_lowercase());
            } else {
                let _ = write!(id, "u{:04x}", u32::from(c));
            }
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
    fn the_layout_has_the_nodes_and_edges_dot_draws_under_the_same_names() {
        let table = TransitionTable::standard();
        let text = dot(&table);
        let layout = Layout::of(&table).to_json();
        let mut edges = 0;
        for cluster in layout["clusters"].as_array().unwrap() {
            for node in cluster["nodes"].as_array().unwrap() {
                let id = node["id"].as_str().unwrap();
                assert!(text.contains(&format!("    {id} [")), "{id} is not drawn");
            }
            for edge in cluster["edges"].as_array().unwrap() {
                let (from, to) = (edge["from"].as_str().unwrap(), edge["to"].as_str().unwrap());
                assert!(
                    text.contains(&format!("    {from} -> {to} [")),
                    "{from} -> {to}"
                );
                edges += 1;
            }
        }
        assert_eq!(edges, edge_lines(&text, " -> ").len());
        assert_eq!(
            Layout::of(&table).id_of(Node::Session(SessionNode::Archived)),
            "session_archived"
        );
        assert_eq!(layout["template"], "standard");
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
            for &state in SessionState::STANDARD {
                assert!(
                    text.contains(&format!("\"{}\"", state.as_str())),
                    "{state} missing"
                );
            }
            // The choice of a delivery method moves no node of its own (it is drawn where it
            // sends the session back, as a change of the delivery method).
            for action in Action::ALL
                .into_iter()
                .filter(|&a| a != Action::SetCheckoutDeliveryMethod)
            {
                assert!(text.contains(action.api_name()), "{action} missing");
            }
            assert!(text.contains("delivery method changed"));
            assert!(text.contains("delivery address changed"));
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
    fn one_edge_per_row_except_the_collapsed_families() {
        for template in [Template::standard(), Template::without_promotions()] {
            let table = TransitionTable::build(template).unwrap();
            let collapsed_rows = table.rows().iter().filter(|r| collapsed(r)).count();
            let session_nodes = |open_only: bool| {
                table
                    .nodes()
                    .into_iter()
                    .filter(|n| match n {
                        // A completed checkout can be neither cancelled nor restarted.
                        Node::Session(SessionNode::At(Some(SessionState::Complete), _)) => false,
                        Node::Session(SessionNode::At(_, phase)) => {
                            !open_only || *phase == Phase::Open
                        }
                        _ => false,
                    })
                    .count()
            };
            // One cancel and one edit row from every active node, one restart row from every
            // open one.
            assert_eq!(
                collapsed_rows,
                2 * session_nodes(false) + session_nodes(true)
            );
            let drawn = table.rows().len() - collapsed_rows + COLLAPSES.len();
            assert_eq!(edge_lines(&dot(&table), " -> ").len(), drawn);
            assert_eq!(edge_lines(&mermaid(&table), " --> ").len(), drawn);
            // Each family reaches Archived through exactly one edge, from its point.
            let dot = dot(&table);
            for c in &COLLAPSES {
                let into_archived: Vec<_> = edge_lines(&dot, "-> session_archived")
                    .into_iter()
                    .filter(|l| l.contains(c.event.label()))
                    .collect();
                assert_eq!(into_archived.len(), 1, "{}", c.event);
                assert!(into_archived[0].trim_start().starts_with(c.point_id));
            }
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
                dot_quote(&row.label())
            );
            assert_eq!(dot.matches(&line).count(), 1, "{line}");
        }
    }

    #[test]
    fn states_that_read_alike_once_plain_get_ids_of_their_own_in_flow_order() {
        use crate::machine::{Step, StepKind, Template};
        let mut template = Template::standard();
        for (after, name) in [
            ("Checkout Summary", "Credit Check"),
            ("Credit Check", "Credit-Check"),
        ] {
            let state: SessionState = name.parse().unwrap();
            assert!(
                template.insert_step(after.parse().unwrap(), Step::new(state, StepKind::Screen))
            );
        }
        let prüfung: SessionState = "Prüfung".parse().unwrap();
        assert!(template.insert_step(
            SessionState::ShippingAddress,
            Step::new(prüfung, StepKind::Screen)
        ));
        let dot = dot(&TransitionTable::build(template).unwrap());
        let first = dot
            .find("session_credit_check [label=\"Credit Check\"]")
            .unwrap();
        let second = dot
            .find("session_credit_check_2 [label=\"Credit-Check\"]")
            .unwrap();
        let summary = dot.find("session_checkout_summary [").unwrap();
        let shipping = dot.find("session_shipping_address [").unwrap();
        let custom = dot.find("session_pru00fcfung [label=\"Prüfung\"]").unwrap();
        assert!(shipping < custom && summary < first && first < second);
    }

    #[test]
    fn node_ids_are_unique_and_plain() {
        let table = TransitionTable::standard();
        let ids: BTreeSet<String> = table.nodes().into_iter().map(node_id).collect();
        assert_eq!(ids.len(), table.nodes().len());
        assert!(COLLAPSES.iter().all(|c| !ids.contains(c.point_id)));
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
