//! The zsfc controller (RFC 9061 IKE-less case): runs the domain CA, enrols nodes with one-time
//! bootstrap tokens, generates every SA from the OS CSPRNG, pushes each node its desired state
//! (SAD, SPD, labels, chains, gateway grants) over mutual TLS 1.3, rekeys make-before-break,
//! applies chain and policy changes at run time and keeps an audit log with a hash chain.
//!
//! State lives in SQLite (the domain, nodes, token hashes, SA metadata, the CA, the audit log);
//! no SA key is ever written to it: a key exists in memory until the one node that needs it has
//! acknowledged the document carrying it.
#![forbid(unsafe_code)]

pub mod audit;
pub mod client;
pub mod limit;
pub mod pki;
pub mod rollout;
pub mod sealed;
mod server;
mod store;
pub mod token;

pub use server::{API_ROUTES, MAX_BODY, OPENAPI, Plane, serve, serve_plane};
pub use store::{
    CircuitReport, Controller, DomainSpec, PeerReport, RekeySettings, Renewal, Revocation, Rolled, SfDrops, StartError,
    revocable,
};

/// The CN of the operator's client certificate (commands such as `zsfc rekey` use it); no node
/// may take this name.
pub const OPERATOR: &str = "operator";

/// Administrative roles, each limited in scope (seed 004 REQ8): the CN of an operator client
/// certificate names one. Every role may read the domain and the nodes' states (they hold no
/// key); each other action belongs to the roles listed in [`Role::may`]. No node may take a
/// role's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything: `operator`.
    Operator,
    /// Rekeys only: `operator-keys`.
    Keys,
    /// Changes the clients' policy only: `operator-policy`.
    Policy,
    /// Changes chains only: `operator-chains`.
    Chains,
    /// Reads only: `auditor`.
    Auditor,
}

/// What an administrative request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    Read,
    Rekey,
    ChangePolicy,
    ChangeChain,
    /// Acts for a node (acknowledges its state): the node itself, or the full operator.
    ActForNode,
    /// Binds a role to a key on a hardware token: the full operator only.
    BindRole,
    /// Revokes an identity, issues a node a new bootstrap token or a client a certificate:
    /// the full operator only.
    Revoke,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Operator, Role::Keys, Role::Policy, Role::Chains, Role::Auditor];

    /// The role's name: `spiffe://DOMAIN/role/NAME` in its certificates.
    pub fn name(self) -> &'static str {
        match self {
            Role::Operator => OPERATOR,
            Role::Keys => "operator-keys",
            Role::Policy => "operator-policy",
            Role::Chains => "operator-chains",
            Role::Auditor => "auditor",
        }
    }

    /// The role named `name` (a role's name only, never a certificate's common name: see
    /// [`Role::of_identity`]).
    pub fn of(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The role a typed identity holds: only an identity of kind role names one.
    pub fn of_identity(id: &zsfc_identity::Identity) -> Option<Role> {
        (id.kind() == zsfc_identity::Kind::Role).then(|| Role::of(id.name())).flatten()
    }

    /// The role's identity in `domain`.
    pub fn identity(self, domain: &str) -> Result<zsfc_identity::Identity, zsfc_identity::IdentityError> {
        zsfc_identity::Identity::new(domain, zsfc_identity::Kind::Role, self.name())
    }

    pub fn may(self, a: Admin) -> bool {
        matches!(
            (self, a),
            (Role::Operator, _)
                | (_, Admin::Read)
                | (Role::Keys, Admin::Rekey)
                | (Role::Policy, Admin::ChangePolicy)
                | (Role::Chains, Admin::ChangeChain)
        )
    }
}
