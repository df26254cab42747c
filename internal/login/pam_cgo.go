//go:build cgo && linux

package login

/*
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

// The Linux-PAM application interface, declared here rather than taken from
// <security/pam_appl.h>: the library is loaded at run time with dlopen, so
// neither the headers (libpam0g-dev) nor libpam itself are needed to build,
// and a host without libpam runs without PAM.
typedef struct pam_handle pam_handle_t;
struct pam_message { int msg_style; const char *msg; };
struct pam_response { char *resp; int resp_retcode; };
struct pam_conv {
	int (*conv)(int, const struct pam_message **, struct pam_response **, void *);
	void *appdata_ptr;
};

// berth_msgs collects what modules say (pam_nologin's file, pam_unix's
// "account expired", ...) for the refusal's reason.
struct berth_msgs { char buf[2048]; size_t len; };

static int berth_conv(int n, const struct pam_message **msg, struct pam_response **resp, void *data) {
	struct berth_msgs *m = data;
	struct pam_response *r;
	int i;
	if (n <= 0 || n > 32) return 19; // PAM_CONV_ERR
	r = calloc(n, sizeof *r);
	if (r == NULL) return 5; // PAM_BUF_ERR
	for (i = 0; i < n; i++) {
		const char *s;
		size_t l;
		switch (msg[i]->msg_style) {
		case 3: // PAM_ERROR_MSG
		case 4: // PAM_TEXT_INFO
			s = msg[i]->msg ? msg[i]->msg : "";
			l = strlen(s);
			if (m->len + l + 2 < sizeof m->buf) {
				memcpy(m->buf + m->len, s, l);
				m->len += l;
				m->buf[m->len++] = '\n';
				m->buf[m->len] = 0;
			}
			break;
		default: // a prompt: nobody is there to answer it
			free(r);
			return 19; // PAM_CONV_ERR
		}
	}
	*resp = r;
	return 0;
}

static void *berth_lib;
static int (*p_start)(const char *, const char *, const struct pam_conv *, pam_handle_t **);
static int (*p_end)(pam_handle_t *, int);
static int (*p_acct_mgmt)(pam_handle_t *, int);
static int (*p_setcred)(pam_handle_t *, int);
static int (*p_open_session)(pam_handle_t *, int);
static int (*p_set_item)(pam_handle_t *, int, const void *);
static char **(*p_getenvlist)(pam_handle_t *);
static const char *(*p_strerror)(pam_handle_t *, int);

// berth_pam_load loads libpam once; it returns NULL or dlerror's text.
static const char *berth_pam_load(void) {
	const char *e;
	if (berth_lib != NULL) return NULL;
	berth_lib = dlopen("libpam.so.0", RTLD_NOW | RTLD_LOCAL);
	if (berth_lib == NULL) {
		e = dlerror();
		return e ? e : "dlopen libpam.so.0 failed";
	}
#define SYM(v, name) if ((*(void **)(&v) = dlsym(berth_lib, name)) == NULL) { e = dlerror(); dlclose(berth_lib); berth_lib = NULL; return e ? e : name; }
	SYM(p_start, "pam_start");
	SYM(p_end, "pam_end");
	SYM(p_acct_mgmt, "pam_acct_mgmt");
	SYM(p_setcred, "pam_setcred");
	SYM(p_open_session, "pam_open_session");
	SYM(p_set_item, "pam_set_item");
	SYM(p_getenvlist, "pam_getenvlist");
	SYM(p_strerror, "pam_strerror");
#undef SYM
	return NULL;
}

// The conversation lives as long as the handle: the helper never frees it.
static int berth_pam_start(const char *service, const char *user, struct berth_msgs **msgs, pam_handle_t **h) {
	struct pam_conv *conv = calloc(1, sizeof *conv);
	*msgs = calloc(1, sizeof **msgs);
	if (conv == NULL || *msgs == NULL) return 5; // PAM_BUF_ERR
	conv->conv = berth_conv;
	conv->appdata_ptr = *msgs;
	return p_start(service, user, conv, h);
}
static int berth_pam_end(pam_handle_t *h, int status) { return p_end(h, status); }
static int berth_pam_acct_mgmt(pam_handle_t *h, int flags) { return p_acct_mgmt(h, flags); }
static int berth_pam_setcred(pam_handle_t *h, int flags) { return p_setcred(h, flags); }
static int berth_pam_open_session(pam_handle_t *h, int flags) { return p_open_session(h, flags); }
static int berth_pam_set_item(pam_handle_t *h, int type, const char *v) { return p_set_item(h, type, v); }
static char **berth_pam_getenvlist(pam_handle_t *h) { return p_getenvlist(h); }
static const char *berth_pam_strerror(pam_handle_t *h, int rc) { return p_strerror(h, rc); }
static void berth_msgs_take(struct berth_msgs *m, char *out, size_t n) {
	size_t l = m->len < n - 1 ? m->len : n - 1;
	memcpy(out, m->buf, l);
	out[l] = 0;
	m->len = 0;
	m->buf[0] = 0;
}
*/
import "C"

import (
	"errors"
	"strings"
	"sync"
	"unsafe"
)

// Linux-PAM's return codes, flags and items (security/_pam_types.h).
const (
	pamSuccess        = 0
	pamNewAuthtokReqd = 12
	pamEstablishCred  = 0x2
	pamTTY            = 3
	pamXDisplay       = 11
)

var loadOnce struct {
	sync.Once
	err error
}

// loadPAM loads libpam.so.0 once.
func loadPAM() error {
	loadOnce.Do(func() {
		if e := C.berth_pam_load(); e != nil {
			loadOnce.err = errors.New(C.GoString(e))
		}
	})
	return loadOnce.err
}

// pamTx is one PAM transaction. Its methods run on the calling thread, which
// the helper keeps locked (pam_limits sets the thread's priority).
type pamTx struct {
	h    *C.pam_handle_t
	msgs *C.struct_berth_msgs
}

// pamError is a PAM function's failure.
type pamError struct {
	code int
	text string // pam_strerror
	msgs string // what modules said
}

func (e *pamError) Error() string {
	s := e.text
	if e.msgs != "" {
		s += ": " + e.msgs
	}
	return s
}

// pamStart starts a transaction for user with service's stack.
func pamStart(service, user string) (*pamTx, error) {
	if err := loadPAM(); err != nil {
		return nil, err
	}
	cs, cu := C.CString(service), C.CString(user)
	defer C.free(unsafe.Pointer(cs))
	defer C.free(unsafe.Pointer(cu))
	tx := &pamTx{}
	rc := C.berth_pam_start(cs, cu, &tx.msgs, &tx.h)
	if rc != pamSuccess {
		return nil, &pamError{code: int(rc), text: "pam_start failed"}
	}
	return tx, nil
}

// err turns a return code into nil or a *pamError with the modules' words.
func (tx *pamTx) err(rc C.int) error {
	msgs := tx.takeMessages()
	if rc == pamSuccess {
		return nil
	}
	return &pamError{code: int(rc), text: C.GoString(C.berth_pam_strerror(tx.h, rc)), msgs: msgs}
}

// takeMessages returns and forgets what the modules said so far, one line.
func (tx *pamTx) takeMessages() string {
	buf := make([]byte, 2048)
	C.berth_msgs_take(tx.msgs, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	s := C.GoString((*C.char)(unsafe.Pointer(&buf[0])))
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

func (tx *pamTx) setItem(item int, v string) error {
	cv := C.CString(v)
	defer C.free(unsafe.Pointer(cv))
	return tx.err(C.berth_pam_set_item(tx.h, C.int(item), cv))
}

// acctMgmt runs the account stack. A password that must be changed
// (PAM_NEW_AUTHTOK_REQD) is reported by mustChange, not as an error: the
// session does not log in with it.
func (tx *pamTx) acctMgmt() (mustChange bool, err error) {
	rc := C.berth_pam_acct_mgmt(tx.h, 0)
	if rc == pamNewAuthtokReqd {
		tx.takeMessages()
		return true, nil
	}
	return false, tx.err(rc)
}

func (tx *pamTx) setCred() error { return tx.err(C.berth_pam_setcred(tx.h, pamEstablishCred)) }

func (tx *pamTx) openSession() error { return tx.err(C.berth_pam_open_session(tx.h, 0)) }

// envList returns the PAM environment ("NAME=value").
func (tx *pamTx) envList() []string {
	l := C.berth_pam_getenvlist(tx.h)
	if l == nil {
		return nil
	}
	var out []string
	p := unsafe.Pointer(l)
	for i := 0; ; i++ {
		e := *(**C.char)(unsafe.Add(p, uintptr(i)*unsafe.Sizeof(uintptr(0))))
		if e == nil {
			break
		}
		out = append(out, C.GoString(e))
		C.free(unsafe.Pointer(e))
	}
	C.free(p)
	return out
}

// end ends the transaction without closing the session (used on failures).
func (tx *pamTx) end(status int) { C.berth_pam_end(tx.h, C.int(status)) }
