package broker

import (
	"context"
	"time"
)

// Template is a launchable session recipe, published to users and groups.
// LaunchTemplate turns it into a CreateSessions item for the launching user.
type Template struct {
	// ID is assigned by CreateTemplate (a UUID).
	ID string
	// Name is required, 1 to MaxTemplateNameLength characters, and unique.
	Name string
	// Description is free text of at most MaxTemplateDescriptionLength bytes.
	Description string
	// Type is TypeVirtual or TypeConsole.
	Type string
	// Requirements is an expression of the CreateSessions Requirements language.
	Requirements string
	// InitFile, AutorunFile and AutorunFileArguments are as in CreateSessions.
	InitFile             string
	AutorunFile          string
	AutorunFileArguments []string
	// MaxConcurrentClients caps the session's connections (0: the default).
	MaxConcurrentClients int64
	// DcvGlEnabled asks for DCV GL (VIRTUAL only).
	DcvGlEnabled bool
	// StorageRoot is the session's storage root, as in CreateSessions.
	StorageRoot string
	// Users are the OS user names the template is published to.
	Users []string
	// Groups are the identity provider groups whose members see the template.
	Groups []string
	// CreatedAt and UpdatedAt are set by the Service.
	CreatedAt, UpdatedAt time.Time
}

// TemplateStore keeps templates and session shares. Both stores
// (internal/sqlite, internal/postgres) implement it; the Service finds it on
// its Store by a type assertion.
type TemplateStore interface {
	// InsertTemplate stores a new template. It returns ErrConflict if its ID
	// or its Name is taken.
	InsertTemplate(ctx context.Context, t *Template) error
	// UpdateTemplate replaces every field of the template with ID t.ID but
	// CreatedAt. It returns ErrNotFound for an unknown ID and ErrConflict if
	// another template has t.Name.
	UpdateTemplate(ctx context.Context, t *Template) error
	// DeleteTemplate returns ErrNotFound for an unknown ID.
	DeleteTemplate(ctx context.Context, id string) error
	// GetTemplate returns ErrNotFound for an unknown ID.
	GetTemplate(ctx context.Context, id string) (*Template, error)
	// ListTemplates returns every template ordered by Name.
	ListTemplates(ctx context.Context) ([]*Template, error)
	// SetShares replaces the shares of a session with shares (none: no
	// share). It returns ErrNotFound if the session does not exist. Deleting
	// the session's row (DeleteSession, PurgeDeleted, DeleteServer) removes
	// its shares.
	SetShares(ctx context.Context, sessionID string, shares []Share) error
	// ListShares returns a session's shares ordered by User.
	ListShares(ctx context.Context, sessionID string) ([]Share, error)
	// SharesWith returns the shares given to user, ordered by SessionID.
	SharesWith(ctx context.Context, user string) ([]Share, error)
}

// CreateTemplate validates t and stores it under a new ID.
func (s *Service) CreateTemplate(ctx context.Context, t Template) (*Template, error) {
	return nil, errNotYet
}

// UpdateTemplate validates t and replaces the template with ID t.ID
// (ErrNotFound when there is none), keeping its CreatedAt.
func (s *Service) UpdateTemplate(ctx context.Context, t Template) (*Template, error) {
	return nil, errNotYet
}

// DeleteTemplate removes the template (ErrNotFound when there is none).
func (s *Service) DeleteTemplate(ctx context.Context, id string) error {
	return errNotYet
}

// GetTemplate returns the template, or ErrNotFound.
func (s *Service) GetTemplate(ctx context.Context, id string) (*Template, error) {
	return nil, errNotYet
}

// ListTemplates returns every template, ordered by name (for admins and the API).
func (s *Service) ListTemplates(ctx context.Context) ([]*Template, error) {
	return nil, errNotYet
}

// TemplatesFor returns the templates published to user or to one of groups,
// ordered by name.
func (s *Service) TemplatesFor(ctx context.Context, user string, groups []string) ([]*Template, error) {
	return nil, errNotYet
}

// LaunchTemplate creates a session of the template owned by user, through
// CreateSessions' core (the same validation, placement and queue). It refuses
// with a CodeForbidden *Error when the template is not published to user or
// one of groups, and returns ErrNotFound for an unknown template. A session
// that could not be placed comes back with its FailureReason set.
func (s *Service) LaunchTemplate(ctx context.Context, id, user string, groups []string) (CreateResult, error) {
	return CreateResult{}, errNotYet
}

var errNotYet = Errorf(CodeUnavailable, "templates are not implemented yet")
