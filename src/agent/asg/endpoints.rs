//! `/force-asgs-for-container?container=H` and `/force-orphaned-asgs-cleanup?container=H` on the
//! agent's force port, answering as the original's (reference §5.2): 405 when syncing is
//! disabled, 400 without a container, 500 with the failure, 200 when done. Plain-text bodies.

use super::AsgAgent;
use crate::http::{Request, Response};

pub const FORCE_ASGS: &str = "/force-asgs-for-container";
pub const ORPHAN_CLEANUP: &str = "/force-orphaned-asgs-cleanup";
pub const DISABLED: &str = "ASG syncing has been disabled administratively";

/// The answer for one of the two routes; `None` for other paths.
pub fn route(asg: Option<&AsgAgent>, req: &Request) -> Option<Response> {
    let force = match req.path.as_str() {
        FORCE_ASGS => true,
        ORPHAN_CLEANUP => false,
        _ => return None,
    };
    let Some(asg) = asg else {
        return Some(Response::text(405, DISABLED));
    };
    let handle = match req.query_param("container") {
        Some(h) if !h.is_empty() => h,
        _ => return Some(Response::text(400, "no container specified")),
    };
    Some(if force {
        match asg.force_container(handle) {
            Ok(()) => Response::text(200, format!("updated container {handle}")),
            Err(e) => {
                log::error!("force ASGs for container {handle}: {e}");
                Response::text(
                    500,
                    format!("failed to update asgs for container {handle}: {e}"),
                )
            }
        }
    } else {
        match asg.cleanup_container(handle) {
            Ok(()) => Response::text(200, format!("cleaned up ASGs for container {handle}")),
            Err(e) => {
                log::error!("orphaned ASG cleanup for container {handle}: {e}");
                Response::text(
                    500,
                    format!("failed to clean up orphaned asgs for container {handle}: {e}"),
                )
            }
        }
    })
}
