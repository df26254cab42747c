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
