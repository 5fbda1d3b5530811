//! A batch of operations, grouped per table, applied as one `iptables-restore --noflush` per
//! table. Builders for the common shapes (chain with a jump, chain removal, make-before-break
//! swap) live here so that every component composes the same operations.

use super::parse::{SavedRule, TableState};
use super::types::{Chain, Rule, Table, Target};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    NewChain(Chain),
    Append(Chain, Rule),
    /// `-I CHAIN pos rule` (1-based)
    Insert(Chain, u32, Rule),
    Delete(Chain, Rule),
    /// Deletes a rule exactly as `iptables-save` printed it.
    DeleteSaved(SavedRule),
    Flush(Chain),
    DeleteChain(Chain),
    Rename(Chain, Chain),
    /// `-C CHAIN rule`: changes nothing, fails the whole batch when the rule is not there (a
    /// batch of checks asks "is all of this in place?" in one process, without a listing).
    Check(Chain, Rule),
}

/// Where a jump to a new chain goes in its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    First,
    Last,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    tables: BTreeMap<Table, Vec<Op>>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn push(&mut self, table: Table, op: Op) -> &mut Batch {
        self.tables.entry(table).or_default().push(op);
        self
    }

    pub fn ops(&self, table: Table) -> &[Op] {
        self.tables.get(&table).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// Tables with operations, in the order they are applied (raw, mangle, nat, filter).
    pub fn tables(&self) -> Vec<Table> {
        Table::ALL
            .iter()
            .copied()
            .filter(|t| !self.ops(*t).is_empty())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.values().all(|v| v.is_empty())
    }

    /// Appends all operations of `other`.
    pub fn extend(&mut self, other: Batch) {
        for (t, ops) in other.tables {
            self.tables.entry(t).or_default().extend(ops);
        }
    }

    pub fn append_rules(&mut self, table: Table, chain: &Chain, rules: &[Rule]) -> &mut Batch {
        for r in rules {
            self.push(table, Op::Append(chain.clone(), r.clone()));
        }
        self
    }

    /// Creates `chain` with `rules`, then hooks it into `parent` with `jump` (a rule whose target
    /// is `-j chain`), so the chain is complete before any packet can reach it.
    pub fn create_chain(
        &mut self,
        table: Table,
        chain: &Chain,
        rules: &[Rule],
        parent: &Chain,
        jump: Rule,
        position: Position,
    ) -> &mut Batch {
        self.push(table, Op::NewChain(chain.clone()));
        self.append_rules(table, chain, rules);
        self.add_jump(table, parent, jump, position)
    }

    pub fn add_jump(
        &mut self,
        table: Table,
        parent: &Chain,
        jump: Rule,
        position: Position,
    ) -> &mut Batch {
        match position {
            Position::First => self.push(table, Op::Insert(parent.clone(), 1, jump)),
            Position::Last => self.push(table, Op::Append(parent.clone(), jump)),
        }
    }

    /// Removes the given chains of `table` that exist in `state`: every rule elsewhere that jumps
    /// or goes to one of them is deleted, then they are flushed, then deleted. Chains that do not
    /// exist are skipped, so this is idempotent.
    pub fn remove_chains(&mut self, state: &TableState, chains: &[Chain]) -> &mut Batch {
        let table = state.table;
        let doomed: BTreeSet<&str> = chains
            .iter()
            .filter(|c| state.has_chain(c.as_str()) && !c.is_builtin())
            .map(|c| c.as_str())
            .collect();
        if doomed.is_empty() {
            return self;
        }
        for rule in &state.rules {
            if doomed.contains(rule.chain.as_str()) {
                continue;
            }
            if let Some(t) = rule.jump_target() {
                if doomed.contains(t) {
                    self.push(table, Op::DeleteSaved(rule.clone()));
                }
            }
        }
        for c in &doomed {
            self.push(table, Op::Flush(Chain::new(c).expect("listed chain")));
        }
        for c in &doomed {
            self.push(table, Op::DeleteChain(Chain::new(c).expect("listed chain")));
        }
        self
    }

    /// Make-before-break replacement: creates `new` with `rules`, inserts `jump` (to `new`) at
    /// position 1 of `parent`, then removes the `old` chains (their jumps, rules and the chains).
    /// In one `iptables-restore` this is one nf_tables transaction, so there is no moment
    /// without either chain.
    pub fn swap_chain(
        &mut self,
        state: &TableState,
        parent: &Chain,
        new: &Chain,
        rules: &[Rule],
        jump: Rule,
        old: &[Chain],
    ) -> &mut Batch {
        debug_assert!(matches!(&jump.target, Target::Jump(c) if c == new));
        self.create_chain(state.table, new, rules, parent, jump, Position::First);
        self.remove_chains(state, old)
    }
}
