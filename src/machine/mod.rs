//! The pure core: the checkout template, the transition table, the requirements and
//! [`decide`]. Nothing here does I/O or reads a clock.

pub(crate) mod action;
pub mod amounts;
mod command;
mod decide;
pub mod limits;
mod requirement;
mod table;
mod template;
mod template_file;

pub use action::{
    Action, CUSTOM_ACTION_MAX_CHARS, CustomAction, CustomActionNameError, Event, ProviderAction,
};
pub use command::{
    CartEdit, CartUpdate, CheckoutDetails, Command, Snapshot, StepOutcome, Target,
    ValidationMessage, WorkerCommand,
};
pub use decide::{
    Changes, DecideContext, Decision, IdSource, Move, OperationSettings, Output, PAYMENT_OPERATION,
    check, decide, decide_worker, operation_node, session_node,
};
pub use requirement::{Guard, Requirement, Unmet, evaluate, guards};
pub use table::{
    Condition, ENTRY_NODES, Machine, Node, OperationNode, Phase, SessionNode,
    TRANSITION_NAME_MAX_CHARS, TableError, Transition, TransitionTable,
};
pub use template::{Step, StepInput, StepKind, Template};
pub use template_file::{StepProblem, StepRef, TemplateFileError};
