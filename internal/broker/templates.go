package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
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
	// Limits are the template's lifetime policies and its MaxSessions and
	// MaxGPUs quotas (sessions of the template, all owners together).
	Limits SessionLimits
	// GPUs is what each session of the template counts against GPU quotas.
	GPUs int
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

// Template limits.
const (
	MaxTemplateNameLength        = 100  // characters
	MaxTemplateDescriptionLength = 1000 // bytes
	// MaxTemplateAudience caps Users and Groups, each.
	MaxTemplateAudience = 1000
	maxGroupNameLength  = 256
)

// codedError is an *Error that also matches a store sentinel (ErrNotFound,
// ErrConflict) with errors.Is, so callers may test either.
type codedError struct {
	e  *Error
	is error
}

func (c *codedError) Error() string   { return c.e.Message }
func (c *codedError) Unwrap() []error { return []error{c.e, c.is} }

func coded(is error, code, format string, args ...any) error {
	return &codedError{e: &Error{Code: code, Message: fmt.Sprintf(format, args...)}, is: is}
}

// errNoTemplates answers when the store keeps no templates.
var errNoTemplates = Errorf(CodeUnavailable, "this broker's store keeps no templates or shares")

// templates returns the store's TemplateStore.
func (s *Service) templates() (TemplateStore, error) {
	ts, ok := s.store.(TemplateStore)
	if !ok {
		return nil, errNoTemplates
	}
	return ts, nil
}

// templateRequest is the CreateSessions item that launches t for owner: the
// one place a template becomes a session. Launches wait in the queue when no
// server has room, as a portal user would rather wait than retry. The session
// records the template's ID, a snapshot of its limits and its GPUs.
func templateRequest(t *Template, owner string) CreateRequest {
	r := CreateRequest{
		Name: t.Name, Owner: owner, Type: t.Type, DcvGlEnabled: t.DcvGlEnabled,
		InitFile: t.InitFile, AutorunFile: t.AutorunFile, AutorunFileArguments: t.AutorunFileArguments,
		Requirements: t.Requirements, StorageRoot: t.StorageRoot, EnqueueRequest: true,
		tpl: t,
	}
	if t.MaxConcurrentClients != 0 {
		mcc := t.MaxConcurrentClients
		r.MaxConcurrentClients = &mcc
	}
	return r
}

// templateCheckOwner stands in for the launching user when a template is
// checked by CreateSessions' rules before anyone launches it.
const templateCheckOwner = "template-owner"

// validateTemplate checks t and normalizes its Type, its lists and its
// Requirements' blank. The session fields go through validateCreate, the
// rules of CreateSessions, so that a template that passes launches.
func (s *Service) validateTemplate(t *Template) error {
	invalid := func(format string, args ...any) error { return Errorf(CodeInvalidInput, format, args...) }
	switch n := utf8.RuneCountInString(t.Name); {
	case strings.TrimSpace(t.Name) == "":
		return invalid("Name: is required")
	case !utf8.ValidString(t.Name) || strings.ContainsFunc(t.Name, unicode.IsControl):
		return invalid("Name: contains invalid characters")
	case strings.TrimSpace(t.Name) != t.Name:
		return invalid("Name: must not start or end with spaces")
	case n > MaxTemplateNameLength:
		return invalid("Name: %d characters exceed the maximum of %d", n, MaxTemplateNameLength)
	}
	switch {
	case len(t.Description) > MaxTemplateDescriptionLength:
		return invalid("Description: %d bytes exceed the maximum of %d", len(t.Description), MaxTemplateDescriptionLength)
	case !utf8.ValidString(t.Description) || strings.IndexByte(t.Description, 0) >= 0:
		return invalid("Description: contains invalid characters")
	}
	if t.Type == "" {
		return invalid("Type: is required (VIRTUAL or CONSOLE)")
	}
	t.Type = strings.ToUpper(t.Type)
	r := templateRequest(t, templateCheckOwner)
	if _, _, err := s.validateCreate(&r); err != nil {
		return invalid("%v", err)
	}
	if err := validateLimits("Limits.", &t.Limits); err != nil {
		return invalid("%v", err)
	}
	if t.GPUs < 0 || t.GPUs > MaxTemplateGPUs {
		return invalid("GPUs: must be between 0 and %d, got %d", MaxTemplateGPUs, t.GPUs)
	}
	if strings.TrimSpace(t.Requirements) == "" {
		t.Requirements = ""
	}
	if len(t.Users) > MaxTemplateAudience {
		return invalid("Users: %d users exceed the maximum of %d", len(t.Users), MaxTemplateAudience)
	}
	for i, u := range t.Users {
		if err := ValidateUserName(fmt.Sprintf("Users[%d]", i), u); err != nil {
			return invalid("%v", err)
		}
	}
	if len(t.Groups) > MaxTemplateAudience {
		return invalid("Groups: %d groups exceed the maximum of %d", len(t.Groups), MaxTemplateAudience)
	}
	for i, g := range t.Groups {
		switch {
		case strings.TrimSpace(g) == "":
			return invalid("Groups[%d]: is empty", i)
		case len(g) > maxGroupNameLength:
			return invalid("Groups[%d]: longer than %d bytes", i, maxGroupNameLength)
		case !utf8.ValidString(g) || strings.ContainsFunc(g, unicode.IsControl):
			return invalid("Groups[%d]: contains invalid characters", i)
		}
	}
	t.Users, t.Groups = sortedSet(t.Users), sortedSet(t.Groups)
	if len(t.AutorunFileArguments) == 0 {
		t.AutorunFileArguments = nil
	}
	return nil
}

// sortedSet returns l sorted without duplicates (nil when empty).
func sortedSet(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	l = slices.Clone(l)
	slices.Sort(l)
	return slices.Compact(l)
}

// templateErr turns a store error about template t into the API's error.
func templateErr(err error, t *Template) error {
	switch {
	case errors.Is(err, ErrConflict):
		return coded(ErrConflict, CodeInvalidInput, "Name: a template named %q exists already", truncate(t.Name, MaxTemplateNameLength))
	case errors.Is(err, ErrNotFound):
		return coded(ErrNotFound, CodeNotFound, "template %q does not exist", truncate(t.ID, 64))
	}
	return err
}

// CreateTemplate validates t and stores it under a new ID.
func (s *Service) CreateTemplate(ctx context.Context, t Template) (*Template, error) {
	ts, err := s.templates()
	if err != nil {
		return nil, err
	}
	if err := s.validateTemplate(&t); err != nil {
		return nil, err
	}
	t.ID = newSessionID()
	t.CreatedAt = s.Now().UTC().Truncate(time.Millisecond)
	t.UpdatedAt = t.CreatedAt
	if err := ts.InsertTemplate(ctx, &t); err != nil {
		return nil, templateErr(err, &t)
	}
	return &t, nil
}

// UpdateTemplate validates t and replaces the template with ID t.ID
// (ErrNotFound when there is none), keeping its CreatedAt.
func (s *Service) UpdateTemplate(ctx context.Context, t Template) (*Template, error) {
	ts, err := s.templates()
	if err != nil {
		return nil, err
	}
	if t.ID == "" {
		return nil, Errorf(CodeInvalidInput, "Id: is required")
	}
	old, err := s.GetTemplate(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	if err := s.validateTemplate(&t); err != nil {
		return nil, err
	}
	t.CreatedAt = old.CreatedAt
	t.UpdatedAt = s.Now().UTC().Truncate(time.Millisecond)
	if err := ts.UpdateTemplate(ctx, &t); err != nil {
		return nil, templateErr(err, &t)
	}
	return &t, nil
}

// DeleteTemplate removes the template (ErrNotFound when there is none).
// Sessions launched from it are not touched.
func (s *Service) DeleteTemplate(ctx context.Context, id string) error {
	ts, err := s.templates()
	if err != nil {
		return err
	}
	if err := ts.DeleteTemplate(ctx, id); err != nil {
		return templateErr(err, &Template{ID: id})
	}
	return nil
}

// GetTemplate returns the template, or an error matching ErrNotFound (with
// CodeNotFound).
func (s *Service) GetTemplate(ctx context.Context, id string) (*Template, error) {
	ts, err := s.templates()
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, Errorf(CodeInvalidInput, "Id: is required")
	}
	t, err := ts.GetTemplate(ctx, id)
	if err != nil {
		return nil, templateErr(err, &Template{ID: id})
	}
	return t, nil
}

// ListTemplates returns every template, ordered by name (for admins and the API).
func (s *Service) ListTemplates(ctx context.Context) ([]*Template, error) {
	ts, err := s.templates()
	if err != nil {
		return nil, err
	}
	return ts.ListTemplates(ctx)
}

// PublishedTo reports whether t is published to user or to one of groups.
func (t *Template) PublishedTo(user string, groups []string) bool {
	if user != "" && slices.Contains(t.Users, user) {
		return true
	}
	for _, g := range groups {
		if slices.Contains(t.Groups, g) {
			return true
		}
	}
	return false
}

// TemplatesFor returns the templates published to user or to one of groups,
// ordered by name.
func (s *Service) TemplatesFor(ctx context.Context, user string, groups []string) ([]*Template, error) {
	all, err := s.ListTemplates(ctx)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, t := range all {
		if t.PublishedTo(user, groups) {
			out = append(out, t)
		}
	}
	return out, nil
}

// LaunchTemplate creates a session of the template owned by user, through
// CreateSessions' core (the same validation, placement and queue: a launch
// that finds no room waits in the queue). It refuses with a CodeForbidden
// *Error when the template is not published to user or one of groups, and
// with an error matching ErrNotFound for an unknown template. A session that
// could not be created comes back with its FailureReason set. groups are the
// user's identity provider groups: the session keeps them (SessionSpec.Groups),
// and group limits apply to them as to the groups source's.
func (s *Service) LaunchTemplate(ctx context.Context, id, user string, groups []string) (CreateResult, error) {
	if err := ValidateUserName("Owner", user); err != nil {
		return CreateResult{}, Errorf(CodeInvalidInput, "%v", err)
	}
	t, err := s.GetTemplate(ctx, id)
	if err != nil {
		return CreateResult{}, err
	}
	if !t.PublishedTo(user, groups) {
		return CreateResult{}, Errorf(CodeForbidden, "the template %q is not published to user %q or to their groups", t.Name, user)
	}
	r := templateRequest(t, user)
	r.groups = groups
	res, err := s.CreateSessions(ctx, []CreateRequest{r})
	if err != nil {
		return CreateResult{}, err
	}
	return res[0], nil
}
