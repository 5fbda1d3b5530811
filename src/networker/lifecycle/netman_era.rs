//! The netman-era actions on a running container: `net-in` (one more port mapping) and
//! `net-out` / `bulk-net-out` (more ASG allows).

use super::Networker;
use crate::iptables::{Batch, Op, Table};
use crate::networker::names::ChainNames;
use crate::networker::protocol::{NetInInput, NetOutRule, PortMapping};
use crate::networker::rules;
use crate::networker::Error;
use std::net::Ipv4Addr;

impl Networker {
    /// The container's IP (checked against the one garden gave, if any) and workload.
    fn container_ip(
        &self,
        handle: &str,
        given: Option<Ipv4Addr>,
    ) -> Result<(Ipv4Addr, Option<String>), Error> {
        let c = self
            .store
            .get(handle)?
            .ok_or_else(|| Error::NotUp(handle.to_string()))?;
        if let Some(given) = given {
            if given != c.ip {
                return Err(Error::WrongIp {
                    handle: handle.to_string(),
                    given,
                    actual: c.ip,
                });
            }
        }
        Ok((c.ip, c.workload().map(str::to_string)))
    }

    /// `net-in`: one more port mapping for a running container.
    pub fn net_in(&self, handle: &str, input: &NetInInput) -> Result<PortMapping, Error> {
        let given = match input.container_ip.as_deref() {
            Some(s) if !s.is_empty() => Some(
                s.parse()
                    .map_err(|_| Error::Input(format!("invalid ContainerIP {s:?}")))?,
            ),
            _ => None,
        };
        let (ip, _) = self.container_ip(handle, given)?;
        let ports = self.ports.acquire(handle, &[input.host_port])?;
        let requested = PortMapping {
            host_port: input.host_port,
            container_port: input.container_port,
        };
        let m = PortMapping::resolved(requested, ports[0]);
        let netin = ChainNames::for_handle(handle).netin;
        let mut b = Batch::new();
        b.push(
            Table::Mangle,
            Op::Append(netin.clone(), rules::netin_mark(&self.config, &m)),
        );
        b.push(
            Table::Nat,
            Op::Append(netin.clone(), rules::netin_dnat(&self.config, ip, &m)),
        );
        if let Err(e) = self.iptables.apply(&b) {
            self.undo_net_in(handle, &m);
            return Err(e.into());
        }
        Ok(m)
    }

    /// Undoes one `net-in` call only: its mark rule if it went in, and its host port.
    fn undo_net_in(&self, handle: &str, m: &PortMapping) {
        let netin = ChainNames::for_handle(handle).netin;
        let mark = rules::netin_mark(&self.config, m);
        let mut undo = Batch::new();
        if let Ok(state) = self.iptables.list(Table::Mangle) {
            let spec = crate::iptables::render::rule_tokens(&mark);
            if state.rules_of(netin.as_str()).any(|r| r.args == spec) {
                undo.push(Table::Mangle, Op::Delete(netin, mark));
            }
        }
        let _ = self.iptables.apply(&undo);
        let _ = self.ports.release_one(handle, m.host_port);
    }

    /// `net-out` / `bulk-net-out`: more ASG allows for a running container, inserted after the
    /// fixed rules (so deny networks still win), in the order given.
    pub fn net_out(
        &self,
        handle: &str,
        container_ip: Option<Ipv4Addr>,
        rules_in: &[NetOutRule],
    ) -> Result<(), Error> {
        crate::networker::protocol::check_netout_size(rules_in)?;
        let (_, workload) = self.container_ip(handle, container_ip)?;
        let names = ChainNames::for_handle(handle);
        let converted = rules::convert_netout(
            rules_in,
            &names.netout_log,
            self.config.iptables_asg_logging,
        )?;
        let deny = rules::workload_deny_networks(&self.config, workload.as_deref()).len();
        let pos = rules::netout_preamble_len(deny, self.config.iptables_asg_logging) + 1;
        let mut b = Batch::new();
        for (i, r) in converted.into_iter().enumerate() {
            b.push(
                Table::Filter,
                Op::Insert(names.netout.clone(), pos + i as u32, r),
            );
        }
        Ok(self.iptables.apply(&b)?)
    }
}
